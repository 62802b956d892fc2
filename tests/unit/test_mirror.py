"""The mirror's pure fold: each event's effect, the inconsistencies it refuses, the stored
form of events, and the header fields the read API filters on."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from granular.domain.mirror import (
    BatchIssued,
    CertificateIssued,
    EventMeta,
    MirrorInconsistent,
    MirrorState,
    OperatorSet,
    RegistryEvent,
    SliceClaimed,
    SliceSplit,
    SliceTransferred,
    SliceWithdrawn,
    WalletClosed,
    apply,
    event_args,
    event_from_args,
    event_name,
    header_fields,
    slice_ids_of,
    wallets_of,
)
from granular.domain.slices import Kind, SliceState

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20
_log = iter(range(10**9))


def meta(block: int = 1) -> EventMeta:
    index = next(_log)
    return EventMeta(block, "0x" + "11" * 32, "0x" + f"{index:064x}", index)


def issued(cid: int, owner: str = A, kind: Kind = Kind.PRODUCTION, qty: int = 100) -> RegistryEvent:
    return CertificateIssued(meta(), cid, owner, kind, qty, "0x" + "22" * 32)


def fold(*events: RegistryEvent) -> MirrorState:
    state = MirrorState()
    for event in events:
        apply(state, event)
    return state


def test_issue_makes_a_certificate_and_its_initial_active_slice() -> None:
    state = fold(issued(1, A, Kind.CONSUMPTION, 1500))
    assert state.certificates[1].quantity_wh == 1500
    assert state.slices[1].state is SliceState.ACTIVE
    assert state.slices[1].kind is Kind.CONSUMPTION
    assert state.wallets[A].active_slices == 1
    assert state.changed_slices == {1} and state.changed_wallets == {A}


def test_batch_issued_names_the_batch_of_each_of_its_certificates() -> None:
    state = fold(issued(1), issued(2), BatchIssued(meta(), "0x" + "33" * 32, 1, 2))
    assert {c.batch_id for c in state.certificates.values()} == {"0x" + "33" * 32}


def test_batch_of_an_unknown_certificate_is_inconsistent() -> None:
    with pytest.raises(MirrorInconsistent) as error:
        fold(issued(1), BatchIssued(meta(), "0x" + "33" * 32, 1, 2))
    assert error.value.details["value"] == "2"


def test_split_removes_the_parent_and_makes_active_children() -> None:
    state = fold(
        issued(1, A, qty=1700), SliceSplit(meta(), 1, 1, (2, 3, 4), (1200, 250, 250), (B, C, A))
    )
    assert state.slices[1].state is SliceState.REMOVED
    assert [state.slices[i].owner for i in (2, 3, 4)] == [B, C, A]
    assert all(state.slices[i].parent_id == 1 for i in (2, 3, 4))
    assert {a: w.active_slices for a, w in state.wallets.items()} == {A: 1, B: 1, C: 1}


def test_split_whose_children_do_not_sum_to_the_parent_is_inconsistent() -> None:
    with pytest.raises(MirrorInconsistent) as error:
        fold(issued(1, qty=100), SliceSplit(meta(), 1, 1, (2, 3), (50, 51), (A, A)))
    assert error.value.details["field"] == "quantitiesWh"


def test_transfer_moves_the_owner_and_the_counts() -> None:
    state = fold(issued(1, A), SliceTransferred(meta(), 1, A, B))
    assert state.slices[1].owner == B
    assert (state.wallets[A].active_slices, state.wallets[B].active_slices) == (0, 1)


def test_transfer_from_a_wallet_that_does_not_own_the_slice_is_inconsistent() -> None:
    with pytest.raises(MirrorInconsistent):
        fold(issued(1, A), SliceTransferred(meta(), 1, B, C))


def test_claim_marks_both_sides_claimed_and_records_who() -> None:
    state = fold(
        issued(1, A, Kind.PRODUCTION, 10),
        issued(2, B, Kind.CONSUMPTION, 10),
        SliceClaimed(meta(), 1, 1, 2, 10),
    )
    assert state.slices[1].state is state.slices[2].state is SliceState.CLAIMED
    claim = state.claims[1]
    assert (claim.claimant, claim.consumer, claim.quantity_wh) == (A, B, 10)
    assert (claim.production_certificate_id, claim.consumption_certificate_id) == (1, 2)
    assert state.wallets[A].active_slices == state.wallets[B].active_slices == 0


@pytest.mark.parametrize(
    "final",
    [
        lambda: SliceWithdrawn(meta(), 1, A),
        lambda: SliceClaimed(meta(), 1, 1, 2, 10),
        lambda: SliceSplit(meta(), 1, 1, (3,), (10,), (A,)),
    ],
    ids=["withdrawn", "claimed", "removed"],
)
def test_a_slice_out_of_active_takes_no_further_event(final: object) -> None:
    state = fold(issued(1, A, qty=10), issued(2, A, Kind.CONSUMPTION, 10))
    apply(state, final())  # type: ignore[operator]
    with pytest.raises(MirrorInconsistent) as error:
        apply(state, SliceTransferred(meta(), 1, A, B))
    assert "Active" in error.value.details["rule"]  # type: ignore[operator]


def test_an_id_issued_twice_or_an_unknown_slice_is_inconsistent() -> None:
    with pytest.raises(MirrorInconsistent):
        fold(issued(1), issued(1))
    with pytest.raises(MirrorInconsistent):
        fold(SliceWithdrawn(meta(), 9, A))


def test_close_and_operator_set_the_wallet_flags() -> None:
    state = fold(
        WalletClosed(meta(), A), OperatorSet(meta(), B, C, True), OperatorSet(meta(), B, C, False)
    )
    assert state.wallets[A].closed is True
    assert state.operators[(B, C)] is False
    assert B in state.wallets


def test_load_sets_name_what_each_event_touches() -> None:
    split = SliceSplit(meta(), 1, 1, (2, 3), (5, 5), (A, B))
    assert slice_ids_of(split) == {1, 2, 3}
    assert wallets_of(split) == {A, B}
    assert slice_ids_of(BatchIssued(meta(), "0x", 4, 3)) == {4, 5, 6}
    assert wallets_of(SliceTransferred(meta(), 1, A, C)) == {A, C}


@pytest.mark.parametrize(
    "event",
    [
        issued(1, A, Kind.CONSUMPTION, 7),
        BatchIssued(meta(), "0x" + "33" * 32, 1, 2),
        SliceSplit(meta(), 1, 1, (2, 3), (5, 2), (A, B)),
        SliceTransferred(meta(), 1, A, B),
        SliceClaimed(meta(), 1, 1, 2, 3),
        SliceWithdrawn(meta(), 1, A),
        WalletClosed(meta(), A),
        OperatorSet(meta(), A, B, True),
    ],
    ids=lambda e: event_name(e),
)
def test_stored_form_rebuilds_the_same_event(event: RegistryEvent) -> None:
    stored = json.loads(json.dumps(event_args(event)))
    assert event_from_args(event_name(event), event.meta, stored) == event


def test_header_fields_take_ett_names_nested_country_and_iso_periods() -> None:
    fields = header_fields(
        json.dumps(
            {
                "assetID": "PLANT-1",
                "fuelCode": "ES100",
                "techCode": "TC110",
                "location": {"countryCode": "KE"},
                "periodStart": "2026-01-01T00:00:00Z",
                "periodEnd": 1767229200,
                "buyerReservationId": 7,
            }
        )
    )
    assert fields.asset_id == "PLANT-1"
    assert (fields.fuel_code, fields.tech_code, fields.country) == ("ES100", "TC110", "KE")
    assert fields.period_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert fields.period_end == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert fields.reservation_id == "7"


@pytest.mark.parametrize(
    "raw",
    [None, "not json", "[1, 2]", '{"periodStart": "2026-01-01T00:00:00", "fuelCode": 1.5}'],
    ids=["missing", "malformed", "not-an-object", "naive-time-and-float"],
)
def test_header_fields_of_an_unusable_header_are_empty(raw: str | None) -> None:
    fields = header_fields(raw)
    assert fields.period_start is None and fields.fuel_code is None


@st.composite
def histories(draw: st.DrawFn) -> list[RegistryEvent]:
    """Valid event sequences: issues, splits, transfers, claims, withdrawals."""
    wallets = [A, B, C]
    events: list[RegistryEvent] = []
    active: dict[int, tuple[str, Kind, int]] = {}
    next_id = 1
    for _ in range(draw(st.integers(1, 30))):
        action = draw(st.sampled_from(["issue", "split", "transfer", "claim", "withdraw"]))
        if action == "issue" or not active:
            kind = draw(st.sampled_from(list(Kind)))
            owner = draw(st.sampled_from(wallets))
            qty = draw(st.integers(1, 10**6))
            events.append(CertificateIssued(meta(), next_id, owner, kind, qty, "0x"))
            active[next_id] = (owner, kind, qty)
            next_id += 1
            continue
        slice_id = draw(st.sampled_from(sorted(active)))
        owner, kind, qty = active[slice_id]
        if action == "split" and qty >= 2:
            first = draw(st.integers(1, qty - 1))
            to = draw(st.sampled_from(wallets))
            events.append(
                SliceSplit(
                    meta(), slice_id, 0, (next_id, next_id + 1), (first, qty - first), (to, owner)
                )
            )
            del active[slice_id]
            active[next_id] = (to, kind, first)
            active[next_id + 1] = (owner, kind, qty - first)
            next_id += 2
        elif action == "transfer":
            to = draw(st.sampled_from(wallets))
            events.append(SliceTransferred(meta(), slice_id, owner, to))
            active[slice_id] = (to, kind, qty)
        elif action == "claim":
            others = [i for i, (_, k, q) in active.items() if k != kind and q == qty]
            if others:
                other = others[0]
                production, consumption = (
                    (slice_id, other) if kind is Kind.PRODUCTION else (other, slice_id)
                )
                events.append(SliceClaimed(meta(), production, production, consumption, qty))
                del active[slice_id], active[other]
        else:
            events.append(SliceWithdrawn(meta(), slice_id, owner))
            del active[slice_id]
    return events


@settings(max_examples=200, deadline=None)
@given(histories())
def test_slices_of_a_certificate_sum_to_it_and_wallet_counts_match(
    events: list[RegistryEvent],
) -> None:
    state = fold(*events)
    for certificate in state.certificates.values():
        kept = [
            s.quantity_wh
            for s in state.slices.values()
            if s.certificate_id == certificate.certificate_id and s.state is not SliceState.REMOVED
        ]
        assert sum(kept) == certificate.quantity_wh
    counts = Counter(s.owner for s in state.slices.values() if s.state is SliceState.ACTIVE)
    assert {a: w.active_slices for a, w in state.wallets.items() if w.active_slices} == dict(counts)
