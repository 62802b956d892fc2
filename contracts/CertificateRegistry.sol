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
/// owner (160) | quantityWh (48) | certificateId (44) | state (3) | kind (1), 256 bits in all.
/// Certificate headers live in events only. Certificate and slice ids share one counter from 1,
/// bounded by the 44 bits of the packed certificate id (17.6e12 ids: two thousand years of an
/// hourly registry of a million meters); a quantity by its 48 bits (281 TWh).
contract CertificateRegistry is ICertificateRegistry, AccessControl, ERC2771Context {
    /// @notice Role allowed to issue batches and withdraw slices.
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");
    /// @notice Highest certificate or slice id the packed layout can hold.
    uint256 public constant MAX_ID = (1 << 44) - 1;
    /// @notice Largest quantity one slice can hold, in Wh.
    uint64 public constant MAX_QUANTITY_WH = (1 << 48) - 1;

    uint256 private constant _OWNER_MASK = (1 << 160) - 1;
    uint256 private constant _QUANTITY_SHIFT = 160;
    uint256 private constant _QUANTITY_MASK = (1 << 48) - 1;
    uint256 private constant _CERTIFICATE_SHIFT = 208;
    uint256 private constant _STATE_SHIFT = 252;
    uint256 private constant _STATE_MASK = 7;
    uint256 private constant _KIND_SHIFT = 255;

    /// @dev Wallet word: activeSlices in the low 64 bits, the closed flag above them.
    uint256 private constant _ACTIVE_MASK = (1 << 64) - 1;
    uint256 private constant _CLOSED = 1 << 64;

    /// @dev What a bulk command remembers from one entry to the next, so that entries which
    /// repeat a wallet cost no repeated storage access: the caller, the wallets it was found to
    /// act for (permission cannot change inside a transaction), the last receiver found open
    /// (nor can that), and one pending change of the Active count for a run of entries that
    /// debit one wallet (`runA`) and for a run that credits or debits another (`runB`); for
    /// claimBatch, the entry's index and the remainders the last entry's splits left with the
    /// owners (0: that side was not split), which an entry names with slice id 0.
    struct BatchCache {
        address caller;
        uint256 entry;
        uint256 remainderP;
        uint256 remainderC;
        address permittedA;
        address permittedB;
        address openTo;
        address runA;
        uint256 countA;
        address runB;
        uint256 countB;
    }

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
            uint64 quantityWh = item.quantityWh;
            uint256 id = firstCertificateId + i;
            if (quantityWh == 0) revert CertificateRegistryZeroQuantity(id);
            if (quantityWh > MAX_QUANTITY_WH) revert CertificateRegistryQuantityTooLarge(id, quantityWh, MAX_QUANTITY_WH);
            if (owner != runOwner || runCount == 0) {
                if (runCount != 0) _addActive(runOwner, runCount);
                _requireOpenWallet(owner);
                runOwner = owner;
                runCount = 0;
            }
            Kind kind = item.kind;
            _slices[id] = _pack(owner, quantityWh, id, SliceState.Active, kind);
            emit CertificateIssued(id, owner, kind, quantityWh, item.dataHash);
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

    /// @notice Claim each entry as `claim` (quantity 0: both whole and equal) or `claimPart`
    /// would, in order, all or nothing, with the same events. A slice id of 0 names the
    /// remainder the previous entry's split of that side left with its owner, so one signed
    /// batch can claim a consumption slice against several production slices (and the reverse)
    /// although the remainders' ids are only known once the batch runs.
    /// @dev Each slice is read and written once (a split side: its child); the Active counts of
    /// a run of entries from the same producer and consumer wallets are written once per run.
    /// @return claimIds Per entry, the claim id (the claimed production slice's id).
    function claimBatch(Claim[] calldata claims) external returns (uint256[] memory claimIds) {
        uint256 count = claims.length;
        if (count == 0) revert CertificateRegistryEmptyList();
        claimIds = new uint256[](count);
        BatchCache memory cache;
        cache.caller = _msgSender();
        for (uint256 i; i < count;) {
            cache.entry = i;
            claimIds[i] = _claimEntry(claims[i], cache);
            // Cannot overflow: i < count, bounded by calldata size.
            unchecked {
                ++i;
            }
        }
        _flushRuns(cache, false);
    }

    /// @notice Transfer each entry as `transfer` (quantity 0: the whole slice) or `transferPart`
    /// would, in order, all or nothing, with the same events.
    /// @dev A whole transfer reads and writes its slice once; the receiver's closed flag is read
    /// once per run of one receiver, and the Active counts are written once per run of one
    /// sender and one receiver.
    /// @return sliceIds Per entry, the slice now held by its `to`.
    function transferBatch(Transfer[] calldata transfers) external returns (uint256[] memory sliceIds) {
        uint256 count = transfers.length;
        if (count == 0) revert CertificateRegistryEmptyList();
        sliceIds = new uint256[](count);
        BatchCache memory cache;
        cache.caller = _msgSender();
        for (uint256 i; i < count;) {
            sliceIds[i] = _transferEntry(transfers[i], cache);
            // Cannot overflow: i < count, bounded by calldata size.
            unchecked {
                ++i;
            }
        }
        _flushRuns(cache, true);
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

    /// @dev One claimBatch entry, with `claim`'s and `claimPart`'s checks in their order.
    function _claimEntry(Claim calldata entry, BatchCache memory cache) private returns (uint256) {
        uint256 productionSliceId = _named(entry.productionSliceId, cache.remainderP, cache, Kind.Production);
        uint256 consumptionSliceId = _named(entry.consumptionSliceId, cache.remainderC, cache, Kind.Consumption);
        uint256 production = _activeSlice(productionSliceId);
        uint256 consumption = _activeSlice(consumptionSliceId);
        if (_kindOf(production) != Kind.Production || _kindOf(consumption) != Kind.Consumption) {
            revert CertificateRegistryKindMismatch(productionSliceId, consumptionSliceId);
        }
        address producer = _ownerOf(production);
        address consumer = _ownerOf(consumption);
        if (producer != cache.permittedA) {
            _requirePermissionOf(cache.caller, producer);
            cache.permittedA = producer;
        }
        if (consumer != producer && consumer != cache.permittedB) {
            _requirePermissionOf(cache.caller, consumer);
            cache.permittedB = consumer;
        }
        uint64 quantityWh = entry.quantityWh;
        if (quantityWh == 0) {
            uint64 productionWh = _quantityOf(production);
            uint64 consumptionWh = _quantityOf(consumption);
            if (productionWh != consumptionWh) {
                revert CertificateRegistryQuantityMismatch(
                    productionSliceId, productionWh, consumptionSliceId, consumptionWh
                );
            }
            cache.remainderP = 0;
            cache.remainderC = 0;
        } else {
            uint256 carved;
            (carved, production) = _carve(productionSliceId, production, quantityWh);
            // A split's children are [the part, the remainder]: the remainder is the next id.
            cache.remainderP = carved == productionSliceId ? 0 : carved + 1;
            productionSliceId = carved;
            (carved, consumption) = _carve(consumptionSliceId, consumption, quantityWh);
            cache.remainderC = carved == consumptionSliceId ? 0 : carved + 1;
            consumptionSliceId = carved;
        }
        _slices[productionSliceId] = _withState(production, SliceState.Claimed);
        _slices[consumptionSliceId] = _withState(consumption, SliceState.Claimed);
        _debitA(cache, producer);
        _debitB(cache, consumer);
        emit SliceClaimed(productionSliceId, productionSliceId, consumptionSliceId, _quantityOf(production));
        return productionSliceId;
    }

    /// @dev The slice an entry names: itself, or for 0 the remainder the previous entry left.
    function _named(uint256 sliceId, uint256 remainder, BatchCache memory cache, Kind kind)
        private
        pure
        returns (uint256)
    {
        if (sliceId != 0) return sliceId;
        if (remainder == 0) revert CertificateRegistryNoRemainder(cache.entry, kind);
        return remainder;
    }

    /// @dev One transferBatch entry, with `transfer`'s and `transferPart`'s checks in their order.
    function _transferEntry(Transfer calldata entry, BatchCache memory cache) private returns (uint256) {
        uint256 sliceId = entry.sliceId;
        uint256 packed = _activeSlice(sliceId);
        address from = _ownerOf(packed);
        if (from != cache.permittedA) {
            _requirePermissionOf(cache.caller, from);
            cache.permittedA = from;
        }
        address to = entry.to;
        uint64 quantityWh = entry.quantityWh;
        if (quantityWh != 0) {
            if (to == address(0)) revert CertificateRegistryInvalidAddress(to);
            uint64 available = _quantityOf(packed);
            if (quantityWh > available) {
                revert CertificateRegistryInsufficientQuantity(sliceId, available, quantityWh);
            }
            if (quantityWh != available) {
                Part[] memory parts = new Part[](1);
                parts[0] = Part(quantityWh, to);
                return _split(sliceId, packed, parts)[0];
            }
        }
        if (to != cache.openTo || to == address(0)) {
            _requireOpenWallet(to);
            cache.openTo = to;
        }
        _slices[sliceId] = (packed & ~_OWNER_MASK) | uint256(uint160(to));
        if (from != to) {
            _debitA(cache, from);
            _creditB(cache, to);
        }
        emit SliceTransferred(sliceId, from, to);
        return sliceId;
    }

    /// @dev Write the pending counts of both runs; run B credits when `creditB`, else debits.
    function _flushRuns(BatchCache memory cache, bool creditB) private {
        if (cache.countA != 0) _subActive(cache.runA, cache.countA);
        if (cache.countB != 0) {
            if (creditB) _addActive(cache.runB, cache.countB);
            else _subActive(cache.runB, cache.countB);
        }
    }

    /// @dev One Active slice fewer in `wallet`, written when run A moves to another wallet.
    function _debitA(BatchCache memory cache, address wallet) private {
        if (wallet != cache.runA) {
            if (cache.countA != 0) _subActive(cache.runA, cache.countA);
            cache.runA = wallet;
            cache.countA = 0;
        }
        // Cannot overflow: at most one per entry of the batch.
        unchecked {
            ++cache.countA;
        }
    }

    /// @dev One Active slice fewer in `wallet`, written when run B moves to another wallet.
    function _debitB(BatchCache memory cache, address wallet) private {
        if (wallet != cache.runB) {
            if (cache.countB != 0) _subActive(cache.runB, cache.countB);
            cache.runB = wallet;
            cache.countB = 0;
        }
        // Cannot overflow: at most one per entry of the batch.
        unchecked {
            ++cache.countB;
        }
    }

    /// @dev One Active slice more in `wallet`, written when run B moves to another wallet.
    function _creditB(BatchCache memory cache, address wallet) private {
        if (wallet != cache.runB) {
            if (cache.countB != 0) _addActive(cache.runB, cache.countB);
            cache.runB = wallet;
            cache.countB = 0;
        }
        // Cannot overflow: at most one per entry of the batch.
        unchecked {
            ++cache.countB;
        }
    }

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
        _requirePermissionOf(_msgSender(), wallet);
    }

    function _requirePermissionOf(address caller, address wallet) private view {
        if (caller != wallet && !_operators[wallet][caller]) revert CertificateRegistryUnauthorized(caller, wallet);
    }

    function _requireOpenWallet(address wallet) private view {
        if (wallet == address(0)) revert CertificateRegistryInvalidAddress(wallet);
        if (_wallets[wallet] & _CLOSED != 0) revert CertificateRegistryWalletClosed(wallet);
    }

    /// @dev The count is changed modulo 2**64 inside its own 64 bits, never touching the closed
    /// flag. Bulk commands defer the counts of their runs; their order keeps every stored count
    /// at or above zero (a receiver's pending credit is written as soon as an entry names another
    /// receiver, which any entry debiting that wallet does), but were a count ever to pass below
    /// zero between two writes it could not flip the closed flag, and once every run is written
    /// it is exact: a wallet never holds 2**64 Active slices (there are at most MAX_ID < 2**64).
    function _addActive(address wallet, uint256 count) private {
        // Cannot reach 2**64 (see above); the mask keeps any wrap inside the count's bits.
        unchecked {
            uint256 word = _wallets[wallet];
            _wallets[wallet] = (word & ~_ACTIVE_MASK) | ((word + count) & _ACTIVE_MASK);
        }
    }

    function _subActive(address wallet, uint256 count) private {
        // Only for slices the wallet holds Active (see _addActive); masked like it.
        unchecked {
            uint256 word = _wallets[wallet];
            _wallets[wallet] = (word & ~_ACTIVE_MASK) | ((word - count) & _ACTIVE_MASK);
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
