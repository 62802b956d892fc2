// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Context} from "@openzeppelin/contracts/utils/Context.sol";
import {ERC2771Context} from "@openzeppelin/contracts/metatx/ERC2771Context.sol";
import {ICertificateRegistry} from "./ICertificateRegistry.sol";

/// @title Granular energy certificate registry
/// @notice Certificates are issued in batches by the issuing body and held as slices in wallets.
/// Holders split, transfer and claim their slices, directly or through the trusted ERC-2771
/// forwarder with an EIP-712 signature. The sum of a certificate's non-Removed slices always
/// equals its quantity.
/// @dev Gas is a feature: a slice is one storage slot, laid out from the low bits as
/// owner (160) | quantityWh (64) | certificateId (28) | state (3) | kind (1).
/// Certificate headers live in events only. Certificate and slice ids share one counter from 1,
/// bounded by the 28 bits of the packed certificate id.
contract CertificateRegistry is ICertificateRegistry, AccessControl, ERC2771Context {
    /// @notice Role allowed to issue batches and withdraw slices.
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");
    /// @notice Highest certificate or slice id the packed layout can hold.
    uint256 public constant MAX_ID = (1 << 28) - 1;

    uint256 private constant _OWNER_MASK = (1 << 160) - 1;
    uint256 private constant _QUANTITY_SHIFT = 160;
    uint256 private constant _QUANTITY_MASK = (1 << 64) - 1;
    uint256 private constant _CERTIFICATE_SHIFT = 224;
    uint256 private constant _STATE_SHIFT = 252;
    uint256 private constant _STATE_MASK = 7;
    uint256 private constant _KIND_SHIFT = 255;

    /// @dev Wallet word: activeSlices in the low 64 bits, the closed flag above them.
    uint256 private constant _ACTIVE_MASK = (1 << 64) - 1;
    uint256 private constant _CLOSED = 1 << 64;

    uint256 private _nextId = 1;
    mapping(uint256 sliceId => uint256 packed) private _slices;
    mapping(address wallet => uint256 packed) private _wallets;
    mapping(address wallet => mapping(address operator => bool approved)) private _operators;
    mapping(bytes32 batchId => bool issued) private _batches;

    /// @param admin Holder of DEFAULT_ADMIN_ROLE; grants ISSUER_ROLE.
    /// @param trustedForwarder The ERC2771Forwarder whose relayed calls carry the signer as sender.
    constructor(address admin, address trustedForwarder) ERC2771Context(trustedForwarder) {
        if (admin == address(0)) revert CertificateRegistryInvalidAddress(admin);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------ commands

    /// @notice Issue one certificate per item, each as one Active slice held by `item.owner`.
    /// @dev A batch id is accepted once, which makes a replaced or re-broadcast mint harmless.
    function issueBatch(bytes32 batchId, Issuance[] calldata items)
        external
        onlyRole(ISSUER_ROLE)
        returns (uint256 firstCertificateId)
    {
        uint256 count = items.length;
        if (count == 0) revert CertificateRegistryEmptyBatch(batchId);
        if (_batches[batchId]) revert CertificateRegistryBatchAlreadyIssued(batchId);
        _batches[batchId] = true;
        firstCertificateId = _allocateIds(count);

        // Consecutive items for one owner are counted together: one wallet write per run.
        address runOwner;
        uint256 runCount;
        for (uint256 i; i < count;) {
            Issuance calldata item = items[i];
            address owner = item.owner;
            uint256 id = firstCertificateId + i;
            if (item.quantityWh == 0) revert CertificateRegistryZeroQuantity(id);
            if (owner != runOwner || runCount == 0) {
                if (runCount != 0) _addActive(runOwner, runCount);
                _requireOpenWallet(owner);
                runOwner = owner;
                runCount = 0;
            }
            _slices[id] = _pack(owner, item.quantityWh, id, SliceState.Active, item.kind);
            emit CertificateIssued(id, owner, item.kind, item.quantityWh, item.dataHash);
            // Neither can overflow: both are below count, itself bounded by calldata size.
            unchecked {
                ++runCount;
                ++i;
            }
        }
        _addActive(runOwner, runCount);
        emit BatchIssued(batchId, firstCertificateId, count);
    }

    /// @notice Split an Active slice into parts; what the parts leave over goes back to the owner
    /// as a last child. The parent becomes Removed.
    function split(uint256 sliceId, Part[] calldata parts) external returns (uint256[] memory sliceIds) {
        uint256 packed = _activeSlice(sliceId);
        _requirePermission(_ownerOf(packed));
        sliceIds = _split(sliceId, packed, parts);
    }

    /// @notice Move a whole Active slice to another active wallet.
    function transfer(uint256 sliceId, address to) external {
        uint256 packed = _activeSlice(sliceId);
        address from = _ownerOf(packed);
        _requirePermission(from);
        _transfer(sliceId, packed, from, to);
    }

    /// @notice Send `quantityWh` of a slice to `to`: the whole slice when that is all of it,
    /// otherwise a split whose first child goes to `to` and whose second stays with the owner.
    /// @return newSliceId The slice now held by `to`.
    function transferPart(uint256 sliceId, uint64 quantityWh, address to) external returns (uint256 newSliceId) {
        uint256 packed = _activeSlice(sliceId);
        address from = _ownerOf(packed);
        _requirePermission(from);
        if (to == address(0)) revert CertificateRegistryInvalidAddress(to);
        uint64 available = _quantityOf(packed);
        if (quantityWh == 0) revert CertificateRegistryZeroQuantity(sliceId);
        if (quantityWh > available) revert CertificateRegistryInsufficientQuantity(sliceId, available, quantityWh);
        if (quantityWh == available) {
            _transfer(sliceId, packed, from, to);
            return sliceId;
        }
        Part[] memory parts = new Part[](1);
        parts[0] = Part(quantityWh, to);
        newSliceId = _split(sliceId, packed, parts)[0];
    }

    /// @notice Pair an Active production slice with an Active consumption slice of equal quantity.
    /// Both become Claimed, for good.
    /// @return claimId The production slice's id.
    function claim(uint256 productionSliceId, uint256 consumptionSliceId) external returns (uint256 claimId) {
        (uint256 production, uint256 consumption) = _claimable(productionSliceId, consumptionSliceId);
        uint64 productionWh = _quantityOf(production);
        uint64 consumptionWh = _quantityOf(consumption);
        if (productionWh != consumptionWh) {
            revert CertificateRegistryQuantityMismatch(
                productionSliceId, productionWh, consumptionSliceId, consumptionWh
            );
        }
        return _claim(productionSliceId, production, consumptionSliceId, consumption);
    }

    /// @notice Claim `quantityWh` of each slice, splitting a side first only where it holds more.
    /// @return claimId The id of the production slice that was claimed.
    function claimPart(uint256 productionSliceId, uint256 consumptionSliceId, uint64 quantityWh)
        external
        returns (uint256 claimId)
    {
        (uint256 production, uint256 consumption) = _claimable(productionSliceId, consumptionSliceId);
        if (quantityWh == 0) revert CertificateRegistryZeroQuantity(productionSliceId);
        (productionSliceId, production) = _carve(productionSliceId, production, quantityWh);
        (consumptionSliceId, consumption) = _carve(consumptionSliceId, consumption, quantityWh);
        return _claim(productionSliceId, production, consumptionSliceId, consumption);
    }

    /// @notice Withdraw an Active slice (issuing body only).
    function withdraw(uint256 sliceId) external onlyRole(ISSUER_ROLE) {
        uint256 packed = _activeSlice(sliceId);
        address owner = _ownerOf(packed);
        _slices[sliceId] = _withState(packed, SliceState.Withdrawn);
        _subActive(owner, 1);
        emit SliceWithdrawn(sliceId, owner);
    }

    /// @notice Close the sender's wallet for good. It must hold no Active slice.
    function closeWallet() external {
        address wallet = _msgSender();
        uint256 word = _wallets[wallet];
        if (word & _CLOSED != 0) revert CertificateRegistryWalletClosed(wallet);
        uint64 active = uint64(word & _ACTIVE_MASK);
        if (active != 0) revert CertificateRegistryWalletHasActiveSlices(wallet, active);
        _wallets[wallet] = word | _CLOSED;
        emit WalletClosed(wallet);
    }

    /// @notice Let `operator` act on the sender's wallet (ERC-1155 style), or stop it.
    function setOperator(address operator, bool approved) external {
        address wallet = _msgSender();
        if (operator == address(0) || operator == wallet) {
            revert CertificateRegistryInvalidOperator(wallet, operator);
        }
        _operators[wallet][operator] = approved;
        emit OperatorSet(wallet, operator, approved);
    }

    // ------------------------------------------------------------------ views

    function isOperator(address wallet, address operator) external view returns (bool) {
        return _operators[wallet][operator];
    }

    /// @dev An unknown id answers zeros with state None rather than reverting.
    function sliceOf(uint256 sliceId)
        external
        view
        returns (address owner, Kind kind, SliceState state, uint64 quantityWh, uint256 certificateId)
    {
        uint256 packed = _slices[sliceId];
        return (_ownerOf(packed), _kindOf(packed), _stateOf(packed), _quantityOf(packed), _certificateOf(packed));
    }

    function isBatchIssued(bytes32 batchId) external view returns (bool) {
        return _batches[batchId];
    }

    function walletOf(address wallet) external view returns (bool closed, uint64 activeSlices) {
        uint256 word = _wallets[wallet];
        return (word & _CLOSED != 0, uint64(word & _ACTIVE_MASK));
    }

    /// @notice The id the next certificate or slice will get.
    function nextId() external view returns (uint256) {
        return _nextId;
    }

    // ------------------------------------------------------------------ internals

    function _allocateIds(uint256 count) private returns (uint256 first) {
        first = _nextId;
        uint256 last = first + count - 1;
        if (last > MAX_ID) revert CertificateRegistryIdSpaceExhausted(last, MAX_ID);
        _nextId = last + 1;
    }

    function _split(uint256 parentId, uint256 packed, Part[] memory parts) private returns (uint256[] memory ids) {
        uint256 n = parts.length;
        uint64 remainder = _remainderOf(parentId, packed, parts);
        uint256 count = remainder == 0 ? n : n + 1;
        uint256 first = _allocateIds(count);
        address owner = _ownerOf(packed);
        ids = new uint256[](count);
        uint64[] memory quantities = new uint64[](count);
        address[] memory owners = new address[](count);
        for (uint256 i; i < count; ++i) {
            if (i < n) {
                quantities[i] = parts[i].quantityWh;
                owners[i] = parts[i].to == address(0) ? owner : parts[i].to;
            } else {
                quantities[i] = remainder;
                owners[i] = owner;
            }
            ids[i] = first + i;
            // A child keeps the parent's certificate id, kind and Active state.
            _slices[first + i] = (packed & ~(_OWNER_MASK | (_QUANTITY_MASK << _QUANTITY_SHIFT)))
                | uint256(uint160(owners[i])) | (uint256(quantities[i]) << _QUANTITY_SHIFT);
        }
        _slices[parentId] = _withState(packed, SliceState.Removed);
        _settleSplit(owner, owners);
        emit SliceSplit(parentId, _certificateOf(packed), ids, quantities, owners);
    }

    /// @dev What a split leaves with the owner, after checking every part.
    function _remainderOf(uint256 parentId, uint256 packed, Part[] memory parts) private pure returns (uint64) {
        uint256 n = parts.length;
        if (n == 0) revert CertificateRegistryEmptySplit(parentId);
        uint64 available = _quantityOf(packed);
        uint256 total;
        for (uint256 i; i < n; ++i) {
            if (parts[i].quantityWh == 0) revert CertificateRegistryZeroQuantity(parentId);
            total += parts[i].quantityWh;
        }
        if (total > available) revert CertificateRegistryInsufficientQuantity(parentId, available, total);
        // total <= available, so this cannot underflow.
        unchecked {
            return available - uint64(total);
        }
    }

    /// @dev Wallet counts after a split: the parent leaves the owner, each child joins its owner.
    function _settleSplit(address owner, address[] memory owners) private {
        uint256 keptByOwner;
        for (uint256 i; i < owners.length; ++i) {
            if (owners[i] == owner) {
                ++keptByOwner;
            } else {
                _requireOpenWallet(owners[i]);
                _addActive(owners[i], 1);
            }
        }
        if (keptByOwner == 0) _subActive(owner, 1);
        else if (keptByOwner > 1) _addActive(owner, keptByOwner - 1);
    }

    function _transfer(uint256 sliceId, uint256 packed, address from, address to) private {
        _requireOpenWallet(to);
        _slices[sliceId] = (packed & ~_OWNER_MASK) | uint256(uint160(to));
        if (from != to) {
            _subActive(from, 1);
            _addActive(to, 1);
        }
        emit SliceTransferred(sliceId, from, to);
    }

    function _claimable(uint256 productionSliceId, uint256 consumptionSliceId)
        private
        view
        returns (uint256 production, uint256 consumption)
    {
        production = _activeSlice(productionSliceId);
        consumption = _activeSlice(consumptionSliceId);
        if (_kindOf(production) != Kind.Production || _kindOf(consumption) != Kind.Consumption) {
            revert CertificateRegistryKindMismatch(productionSliceId, consumptionSliceId);
        }
        address producer = _ownerOf(production);
        address consumer = _ownerOf(consumption);
        _requirePermission(producer);
        if (consumer != producer) _requirePermission(consumer);
    }

    /// @dev The slice to claim `quantityWh` from: itself when it holds exactly that, else the
    /// first child of a split that keeps both parts with the owner.
    function _carve(uint256 sliceId, uint256 packed, uint64 quantityWh) private returns (uint256, uint256) {
        uint64 available = _quantityOf(packed);
        if (quantityWh > available) revert CertificateRegistryInsufficientQuantity(sliceId, available, quantityWh);
        if (quantityWh == available) return (sliceId, packed);
        Part[] memory parts = new Part[](1);
        parts[0] = Part(quantityWh, address(0));
        uint256 child = _split(sliceId, packed, parts)[0];
        return (child, _slices[child]);
    }

    function _claim(uint256 productionSliceId, uint256 production, uint256 consumptionSliceId, uint256 consumption)
        private
        returns (uint256)
    {
        _slices[productionSliceId] = _withState(production, SliceState.Claimed);
        _slices[consumptionSliceId] = _withState(consumption, SliceState.Claimed);
        address producer = _ownerOf(production);
        address consumer = _ownerOf(consumption);
        if (producer == consumer) {
            _subActive(producer, 2);
        } else {
            _subActive(producer, 1);
            _subActive(consumer, 1);
        }
        emit SliceClaimed(productionSliceId, productionSliceId, consumptionSliceId, _quantityOf(production));
        return productionSliceId;
    }

    function _activeSlice(uint256 sliceId) private view returns (uint256 packed) {
        packed = _slices[sliceId];
        if (packed == 0) revert CertificateRegistryUnknownSlice(sliceId);
        SliceState state = _stateOf(packed);
        if (state != SliceState.Active) revert CertificateRegistrySliceNotActive(sliceId, state);
    }

    function _requirePermission(address wallet) private view {
        address caller = _msgSender();
        if (caller != wallet && !_operators[wallet][caller]) revert CertificateRegistryUnauthorized(caller, wallet);
    }

    function _requireOpenWallet(address wallet) private view {
        if (wallet == address(0)) revert CertificateRegistryInvalidAddress(wallet);
        if (_wallets[wallet] & _CLOSED != 0) revert CertificateRegistryWalletClosed(wallet);
    }

    function _addActive(address wallet, uint256 count) private {
        // A wallet cannot hold more Active slices than ids exist (MAX_ID < 2**64).
        unchecked {
            _wallets[wallet] += count;
        }
    }

    function _subActive(address wallet, uint256 count) private {
        // Only called for slices the wallet holds Active, each counted once when it became so.
        unchecked {
            _wallets[wallet] -= count;
        }
    }

    function _pack(address owner, uint64 quantityWh, uint256 certificateId, SliceState state, Kind kind)
        private
        pure
        returns (uint256)
    {
        return uint256(uint160(owner)) | (uint256(quantityWh) << _QUANTITY_SHIFT)
            | (certificateId << _CERTIFICATE_SHIFT) | (uint256(state) << _STATE_SHIFT) | (uint256(kind) << _KIND_SHIFT);
    }

    function _withState(uint256 packed, SliceState state) private pure returns (uint256) {
        return (packed & ~(_STATE_MASK << _STATE_SHIFT)) | (uint256(state) << _STATE_SHIFT);
    }

    function _ownerOf(uint256 packed) private pure returns (address) {
        return address(uint160(packed & _OWNER_MASK));
    }

    function _quantityOf(uint256 packed) private pure returns (uint64) {
        return uint64((packed >> _QUANTITY_SHIFT) & _QUANTITY_MASK);
    }

    function _certificateOf(uint256 packed) private pure returns (uint256) {
        return (packed >> _CERTIFICATE_SHIFT) & MAX_ID;
    }

    function _stateOf(uint256 packed) private pure returns (SliceState) {
        return SliceState((packed >> _STATE_SHIFT) & _STATE_MASK);
    }

    function _kindOf(uint256 packed) private pure returns (Kind) {
        return Kind(packed >> _KIND_SHIFT);
    }

    // ------------------------------------------------------------------ ERC-2771 plumbing

    function _msgSender() internal view override(Context, ERC2771Context) returns (address) {
        return ERC2771Context._msgSender();
    }

    function _msgData() internal view override(Context, ERC2771Context) returns (bytes calldata) {
        return ERC2771Context._msgData();
    }

    function _contextSuffixLength() internal view override(Context, ERC2771Context) returns (uint256) {
        return ERC2771Context._contextSuffixLength();
    }
}
