"""Issuance planning: which certificates a reservation's windows make (DESIGN.md §4, issue 7 §3).

Pure: the service hands in what it read (each device's energy per due window, what is
already accounted for each (reservation, device, window), the capacity in force) and gets
back the issuance items to write. Rules, in the order they run, per (device, window) in
window order then device id:

1. The new energy is the window's energy now known minus everything accounted for it
   (minted, pending, failed at planning, or leftover). Nothing new: no item. A positive
   difference is one item with sequence = last sequence + 1 (a top-up is a new
   certificate, never a re-issue).
2. Physical re-check: the window's whole known energy must not exceed
   `capacity_w x hours` of its period with the device revision in force at issuance; if it
   does, the new energy is one `failed` item naming the rule and the numbers.
3. Production only: the target. `apply_target` splits the new energy into what is minted
   and what is `leftover` (two items, sequences n and n + 1, when both are positive),
   counting against the target the production minted or in flight (`counted_wh`).
   Consumption certificates are not counted against the target (the target is the volume
   of production the buyer ordered).

The target is settled on chain, not planned (`settle_target`). An item whose batch reverts
on chain (isolated by bisection) is *reverted*: once its retry is due its
volume is neither accounted for its window nor counted toward the target, so that plan
finds it again as new energy of its window (with any late read) and plans it once more,
sequence + 1, minted up to the target and leftover beyond it exactly as the first time.
The reverted item keeps its row (then marked *retried*) and is never counted again. Until
its retry is due (`due_for_retry`), it is held like an item in flight (accounted and
counted), so a cause that stays (a closed wallet) costs an item per backoff, not one per
pass.

Hence the reservation completes (and the buyer is told the target is reached) only when
the production *confirmed* on chain reaches the target: planned volume may still fail,
confirmed volume cannot. Without authority to exceed, what is planned never exceeds the
target, so when confirmed volume reaches it nothing is in flight and the reservation
never has to be re-opened (completing on planned volume and re-opening on a revert would
be no simpler, and wrong meanwhile: a completed reservation's devices are released).

Every item carries its quantity, so the sum of a (device, window)'s accounted items always
equals the energy known for it, and a second plan with the first one's items accounted
plans nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from eth_hash.auto import keccak

from granular.domain.devices import DeviceKind
from granular.domain.energy import MaxEnergyRule, physical_bound_wh
from granular.domain.reservations import apply_target

# Per-certificate gas of issueBatch measured on anvil (README: 27,934 in a batch of 100),
# rounded up, and what one transaction costs besides: the batch size is held under the cap.
GAS_PER_CERTIFICATE = 28_500
GAS_PER_BATCH_BASE = 80_000
DEFAULT_GAS_CAP = 16_777_216


class ItemOutcome(StrEnum):
    MINT = "mint"  # goes on chain
    FAILED = "failed"  # the physical re-check failed: not minted
    LEFTOVER = "leftover"  # beyond the target without authority to exceed: not minted


def _instant(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z: 2026-06-30T00:00:00Z (microseconds only when not 0)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True, slots=True, order=True)
class ItemKey:
    """(reservation, device, window start, sequence): the idempotency key of one item."""

    reservation_id: int
    device_id: int
    window_start: datetime
    sequence: int

    def text(self) -> str:
        start = _instant(self.window_start)
        return f"{self.reservation_id}:{self.device_id}:{start}:{self.sequence}"


@dataclass(frozen=True, slots=True)
class DeviceWindow:
    """A device's due window within a reservation: its period (the calendar window cut to
    the reservation's span for that device) and the energy known in it."""

    device_id: int
    kind: DeviceKind
    window_start: datetime
    period_start: datetime
    period_end: datetime
    energy_wh: int
    interval_ids: tuple[int, ...] = ()
    submission_ids: tuple[int, ...] = ()

    @property
    def has_data(self) -> bool:
        return bool(self.interval_ids)


@dataclass(frozen=True, slots=True)
class Accounted:
    """What the items of one (reservation, device, window) already hold (retried items, and
    reverted ones due for their retry, excluded: their volume is to be planned again); the
    last sequence counts every item."""

    total_wh: int = 0
    last_sequence: int = 0


@dataclass(frozen=True, slots=True)
class Capacity:
    """The device revision in force at issuance: its id and nameplate capacity."""

    revision_id: int
    capacity_w: int


@dataclass(frozen=True, slots=True)
class TargetState:
    reservation_id: int
    target_volume_wh: int
    authority_to_exceed: bool
    counted_wh: int  # production minted or in flight (reverted volume due for retry excluded)


@dataclass(frozen=True, slots=True)
class PlannedItem:
    key: ItemKey
    kind: DeviceKind
    outcome: ItemOutcome
    quantity_wh: int
    period_start: datetime
    period_end: datetime
    window_energy_wh: int  # all energy known for the window, this item included
    bound_wh: int
    capacity_w: int
    revision_id: int
    interval_ids: tuple[int, ...]
    submission_ids: tuple[int, ...]
    counted_before_wh: int  # the reservation's production counted before this item
    reason: str | None = None

    @property
    def rule(self) -> dict[str, Any]:
        """The max-energy rule and the numbers it was checked with."""
        return {
            "rule": MaxEnergyRule.PHYSICAL.value,
            "energyWh": self.window_energy_wh,
            "boundWh": self.bound_wh,
            "capacityW": self.capacity_w,
            "passed": self.window_energy_wh <= self.bound_wh,
        }


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    items: tuple[PlannedItem, ...]
    counted_wh: int  # production minted or in flight once these items are written
    empty_windows: tuple[DeviceWindow, ...] = field(default=())


def plan_reservation(
    target: TargetState,
    windows: Iterable[DeviceWindow],
    accounted: Mapping[tuple[int, datetime], Accounted],
    capacities: Mapping[int, Capacity],
) -> ReservationPlan:
    """The items a reservation's due windows make now (see the module's rules)."""
    items: list[PlannedItem] = []
    empty: list[DeviceWindow] = []
    counted = target.counted_wh
    for window in sorted(windows, key=lambda w: (w.window_start, w.device_id)):
        if not window.has_data:
            empty.append(window)
        before = accounted.get((window.device_id, window.window_start), Accounted())
        new_wh = window.energy_wh - before.total_wh
        if new_wh <= 0:
            continue
        capacity = capacities[window.device_id]
        bound = physical_bound_wh(capacity.capacity_w, window.period_start, window.period_end)

        sequence = before.last_sequence + 1
        if window.energy_wh > bound:
            reason = (
                f"device {window.device_id}: {window.energy_wh} Wh in "
                f"{window.period_start.isoformat()}..{window.period_end.isoformat()} exceeds the "
                f"physical bound of {bound} Wh (capacity {capacity.capacity_w} W)"
            )
            items.append(
                _item(
                    target,
                    window,
                    capacity,
                    bound,
                    counted,
                    ItemOutcome.FAILED,
                    new_wh,
                    sequence,
                    reason,
                )
            )
            continue
        if window.kind is DeviceKind.CONSUMPTION:
            items.append(
                _item(
                    target,
                    window,
                    capacity,
                    bound,
                    counted,
                    ItemOutcome.MINT,
                    new_wh,
                    sequence,
                    None,
                )
            )
            continue
        split = apply_target(target.target_volume_wh, counted, target.authority_to_exceed, new_wh)
        if split.issue_wh > 0:
            items.append(
                _item(
                    target,
                    window,
                    capacity,
                    bound,
                    counted,
                    ItemOutcome.MINT,
                    split.issue_wh,
                    sequence,
                    None,
                )
            )
            counted += split.issue_wh
            sequence += 1
        if split.leftover_wh > 0:
            items.append(
                _item(
                    target,
                    window,
                    capacity,
                    bound,
                    counted,
                    ItemOutcome.LEFTOVER,
                    split.leftover_wh,
                    sequence,
                    f"target of {target.target_volume_wh} Wh reached without authority to exceed",
                )
            )
    return ReservationPlan(tuple(items), counted, tuple(empty))


@dataclass(frozen=True, slots=True)
class TargetSettlement:
    reached: bool  # confirmed production reached the target just now: warn the buyer
    completes: bool  # reached without authority to exceed: the reservation completes


@dataclass(frozen=True, slots=True)
class RevertedItem:
    """An item whose batch reverted on chain, its volume waiting to be planned again."""

    item_id: int
    reverted_at: datetime
    reverts: int  # reverted or retried items of its (device, window), itself included


def retry_at(item: RevertedItem, *, initial_s: int, max_s: int) -> datetime:
    """When a reverted item's volume may be planned again: `initial_s` after it reverted,
    doubling with each earlier revert of its window, at most `max_s`."""
    exponent = min(max(item.reverts - 1, 0), 32)  # max_s caps it long before 2**32
    return item.reverted_at + timedelta(seconds=min(max_s, initial_s * 2**exponent))


def due_for_retry(
    reverted: Iterable[RevertedItem], now: datetime, *, initial_s: int, max_s: int
) -> tuple[int, ...]:
    """Ids of the reverted items whose volume this plan takes up again. The others are
    held like items in flight: accounted for their window, counted toward the target."""
    return tuple(
        sorted(i.item_id for i in reverted if now >= retry_at(i, initial_s=initial_s, max_s=max_s))
    )


def settle_target(
    *, target_volume_wh: int, authority_to_exceed: bool, settled_wh: int, reached_before: bool
) -> TargetSettlement:
    """Whether the production confirmed on chain (`settled_wh`) reaches the target now.

    Only confirmed volume counts: a planned or sent item may still revert. The target is
    reached once (`reached_before` says it was); without authority to exceed, that is
    when the reservation completes; with it, issuance goes on and the buyer is still told.
    """
    reached = not reached_before and settled_wh >= target_volume_wh
    return TargetSettlement(reached, reached and not authority_to_exceed)


def _item(
    target: TargetState,
    window: DeviceWindow,
    capacity: Capacity,
    bound: int,
    counted: int,
    outcome: ItemOutcome,
    quantity: int,
    sequence: int,
    reason: str | None,
) -> PlannedItem:
    return PlannedItem(
        key=ItemKey(target.reservation_id, window.device_id, window.window_start, sequence),
        kind=window.kind,
        outcome=outcome,
        quantity_wh=quantity,
        period_start=window.period_start,
        period_end=window.period_end,
        window_energy_wh=window.energy_wh,
        bound_wh=bound,
        capacity_w=capacity.capacity_w,
        revision_id=capacity.revision_id,
        interval_ids=window.interval_ids,
        submission_ids=window.submission_ids,
        counted_before_wh=counted,
        reason=reason,
    )


# --- headers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a header says about the device (from the revision in force)."""

    device_id: int
    organization_id: int
    external_id: str
    country_code: str
    fuel_code: str
    device_type_code: str
    project_name: str | None
    latitude: str | None
    longitude: str | None


def build_header(
    *,
    item: PlannedItem,
    device: DeviceFacts,
    registry: str,
    wallet: str,
    issued: datetime,
) -> dict[str, Any]:
    """The certificate's header: ETT and D-REC fields, strings and integers only.

    `certificateID` is the issuance item's key: the on-chain id is only known once minted,
    and the header's hash is minted with it, so the header cannot hold it.
    """
    asset_id = f"{device.organization_id}:{device.external_id}"
    return {
        # EnergyTag (ETT)
        "certificateID": f"{registry}:{item.key.text()}",
        "registry": registry,
        "certificateType": "granular",
        "issued": _instant(issued),
        "periodStart": _instant(item.period_start),
        "periodEnd": _instant(item.period_end),
        "quantity": item.quantity_wh,
        "quantityUnit": "Wh",
        "assetID": asset_id,
        "assetCode": device.external_id,
        "assetCodeType": "granular-device",
        "deviceId": item.key.device_id,  # the issuer's device: GET /devices/{deviceId}/revisions
        "techCode": device.device_type_code,
        "fuelCode": device.fuel_code,
        "address": {"countryCode": device.country_code, "projectName": device.project_name},
        "location": {"latitude": device.latitude, "longitude": device.longitude},
        "kind": item.kind.value,
        # D-REC
        "version": "v1.0",
        "buyerReservationId": str(item.key.reservation_id),
        "beneficiary": wallet,
        "isStandardIssuanceRequested": "I-REC",
        "isStandardIssued": False,
        "type": "REC",
        "deviceIds": [asset_id],
        "groupId": str(item.key.reservation_id),
        "sequence": item.key.sequence,
    }


# --- batches ------------------------------------------------------------------------------


def batch_id(keys: Iterable[ItemKey]) -> bytes:
    """keccak256 of the sorted item keys: the registry's `batchId` (a batch is minted once)."""
    text = "\n".join(sorted(key.text() for key in keys))
    digest: bytes = keccak(text.encode("ascii"))
    return digest


def idempotency_key(batch: bytes) -> str:
    """The outbox key of a batch, derived from its id."""
    return f"issuance:0x{batch.hex()}"


def max_batch_items(gas_cap: int = DEFAULT_GAS_CAP) -> int:
    """The most certificates one issueBatch may carry under a per-transaction gas cap."""
    return max(1, (gas_cap - GAS_PER_BATCH_BASE) // GAS_PER_CERTIFICATE)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def halves(items: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any]]:
    """A reverted batch's two halves (bisection); the first gets the smaller half."""
    middle = len(items) // 2
    return items[:middle], items[middle:]
