// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC2771Forwarder} from "@openzeppelin/contracts/metatx/ERC2771Forwarder.sol";

/// @title The trusted ERC-2771 forwarder beside the registry
/// @notice Relays EIP-712 signed requests of wallet owners; the worker pays the gas. The
/// EIP-712 domain name is fixed so signers and relayers agree on it.
contract GranularForwarder is ERC2771Forwarder {
    constructor() ERC2771Forwarder("GranularForwarder") {}
}
