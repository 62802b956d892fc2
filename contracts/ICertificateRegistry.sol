// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Granular energy certificate registry: external interface
/// @notice Names and argument order are fixed (DESIGN.md §5) so tools and auditors can rely on
/// them. Every event carries what an off-chain mirror needs to rebuild all state without
/// calling a view.
interface ICertificateRegistry {
    enum Kind {
        Production,
        Consumption
    }

    enum SliceState {
        None,
        Active,
        Removed,
        Claimed,
        Withdrawn,
        Expired
    }

    /// @dev One certificate to issue. Its full header is canonical JSON off-chain; only its
    /// keccak256 `dataHash` is kept, in the event.
    struct Issuance {
        address owner;
        Kind kind;
        uint64 quantityWh;
        bytes32 dataHash;
    }

    /// @dev One part of a split. `to == address(0)` keeps the part with the slice's owner.
    struct Part {
        uint64 quantityWh;
        address to;
    }

    /// @dev One entry of `claimBatch`. `quantityWh == 0` claims both slices whole, which must then
    /// hold equal quantities (as `claim`); otherwise it claims that much of each (as `claimPart`).
    /// A slice id of 0 names the remainder that the previous entry's split of that side left with
    /// its owner (e.g. the rest of a consumption slice after a first production slice).
    struct Claim {
        uint256 productionSliceId;
        uint256 consumptionSliceId;
        uint64 quantityWh;
    }

    /// @dev One entry of `transferBatch`. `quantityWh == 0` sends the whole slice (as `transfer`);
    /// otherwise that much of it (as `transferPart`).
    struct Transfer {
        uint256 sliceId;
        uint64 quantityWh;
        address to;
    }

    /// @dev A batch was issued: certificates `firstCertificateId .. firstCertificateId+count-1`.
    event BatchIssued(bytes32 indexed batchId, uint256 firstCertificateId, uint256 count);
    /// @dev A certificate was issued; its initial slice has the certificate's id.
    event CertificateIssued(
        uint256 indexed certificateId, address indexed owner, Kind kind, uint64 quantityWh, bytes32 dataHash
    );
    /// @dev `parentSliceId` became Removed; each child is Active with its quantity and owner.
    event SliceSplit(
        uint256 indexed parentSliceId,
        uint256 indexed certificateId,
        uint256[] childSliceIds,
        uint64[] quantitiesWh,
        address[] owners
    );
    event SliceTransferred(uint256 indexed sliceId, address indexed from, address indexed to);
    /// @dev `claimId` is the id of the production slice that was claimed (a slice is claimed once).
    event SliceClaimed(
        uint256 indexed claimId, uint256 productionSliceId, uint256 indexed consumptionSliceId, uint64 quantityWh
    );
    event SliceWithdrawn(uint256 indexed sliceId, address indexed owner);
    event WalletClosed(address indexed wallet);
    event OperatorSet(address indexed wallet, address indexed operator, bool approved);

    error CertificateRegistryInvalidAddress(address account);
    error CertificateRegistryEmptyBatch(bytes32 batchId);
    error CertificateRegistryBatchAlreadyIssued(bytes32 batchId);
    error CertificateRegistryZeroQuantity(uint256 sliceId);
    error CertificateRegistryUnknownSlice(uint256 sliceId);
    error CertificateRegistrySliceNotActive(uint256 sliceId, SliceState state);
    error CertificateRegistryUnauthorized(address caller, address wallet);
    error CertificateRegistryWalletClosed(address wallet);
    error CertificateRegistryWalletHasActiveSlices(address wallet, uint64 activeSlices);
    error CertificateRegistryInsufficientQuantity(uint256 sliceId, uint64 available, uint256 requested);
    error CertificateRegistryEmptySplit(uint256 sliceId);
    error CertificateRegistryKindMismatch(uint256 productionSliceId, uint256 consumptionSliceId);
    error CertificateRegistryQuantityMismatch(
        uint256 productionSliceId, uint64 productionWh, uint256 consumptionSliceId, uint64 consumptionWh
    );
    error CertificateRegistryInvalidOperator(address wallet, address operator);
    error CertificateRegistryIdSpaceExhausted(uint256 lastId, uint256 maxId);
    /// @dev A certificate's quantity does not fit the 48 bits of the packed slice.
    error CertificateRegistryQuantityTooLarge(uint256 certificateId, uint64 quantityWh, uint64 maxQuantityWh);
    /// @dev `claimBatch` or `transferBatch` was called with no entries.
    error CertificateRegistryEmptyList();
    /// @dev Entry `entry` of `claimBatch` names slice 0 on the `kind` side, but the previous entry
    /// left no remainder there (it is the first entry, or it claimed that side whole).
    error CertificateRegistryNoRemainder(uint256 entry, Kind kind);

    function issueBatch(bytes32 batchId, Issuance[] calldata items) external returns (uint256 firstCertificateId);
    function split(uint256 sliceId, Part[] calldata parts) external returns (uint256[] memory sliceIds);
    function transfer(uint256 sliceId, address to) external;
    function transferPart(uint256 sliceId, uint64 quantityWh, address to) external returns (uint256 newSliceId);
    function claim(uint256 productionSliceId, uint256 consumptionSliceId) external returns (uint256 claimId);
    function claimPart(uint256 productionSliceId, uint256 consumptionSliceId, uint64 quantityWh)
        external
        returns (uint256 claimId);
    /// @dev Every entry as its single command would do it, in order, all or nothing; the same
    /// per-entry events (SliceClaimed, and SliceSplit where a side is split first).
    function claimBatch(Claim[] calldata claims) external returns (uint256[] memory claimIds);
    /// @dev Every entry as its single command would do it, in order, all or nothing; the same
    /// per-entry events (SliceTransferred, or SliceSplit for a part). Returns the slices now held
    /// by each entry's `to`.
    function transferBatch(Transfer[] calldata transfers) external returns (uint256[] memory sliceIds);
    function withdraw(uint256 sliceId) external;
    function closeWallet() external;
    function setOperator(address operator, bool approved) external;
    function isOperator(address wallet, address operator) external view returns (bool);
    function sliceOf(uint256 sliceId)
        external
        view
        returns (address owner, Kind kind, SliceState state, uint64 quantityWh, uint256 certificateId);
    function isBatchIssued(bytes32 batchId) external view returns (bool);
    function walletOf(address wallet) external view returns (bool closed, uint64 activeSlices);
}
