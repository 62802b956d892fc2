"""Helpers for the matching tests: a fleet of two plants and the buyer's site meter with
hourly history reads, issued and mirrored on the session anvil, and a driver that runs
send / index / match until every window is as matched as it can be."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.events import RegistryEventReader
from granular.adapters.db.accounts import Principal
from granular.adapters.db.matching import MatchingClaimRow
from granular.adapters.db.mirror import MirrorSliceRow
from granular.domain.gas import Tier
from granular.domain.reads import ReadKind
from granular.domain.windows import Frequency
from granular.services import issuance, matching
from granular.services.indexer import IndexerConfig, index_once
from granular.services.outbox import OutboxSender
from granular.services.reservations import NewReservation, create_reservation
from tests.integration.chain import Chain
from tests.integration.issuance_helpers import (
    add_device,
    context,
    issue_all,
    new_sender,
    principal,
    reads,
)
from tests.integration.outbox_helpers import CHAIN_ID

HOUR = timedelta(hours=1)


@dataclass
class Fleet:
    reservation_id: int
    owner: Principal
    buyer_org: Principal
    solar: int
    wind: int
    site: int
    windows: list[datetime]
    issuance: issuance.IssuanceContext
    matching: matching.MatchingContext
    sender: OutboxSender
    reader: RegistryEventReader
    indexer: IndexerConfig


def make_fleet(
    *,
    engine: Engine,
    sessions: sessionmaker[Session],
    anvil: Anvil,
    chain: Chain,
    deployment: dict[str, Any],
    issuer_account: LocalAccount,
    wallet: str,
    start: datetime,
    hours: int,
    solar: Callable[[int], int],
    wind: Callable[[int], int],
    site: Callable[[int], int],
    now: datetime,
    batch_size: int = 200,
) -> Fleet:
    """Reads for `hours` windows from `start` (Wh of hour i from each function; 0: no
    read), a reservation of the three devices to `wallet`, issued on chain."""
    owner = principal(sessions, "plants", "device_owner")
    buyer_org = principal(sessions, "buyer", "buyer")
    meter_owner = principal(sessions, "buyer", "device_owner")
    day = start - timedelta(days=1)
    ids = {
        "solar": add_device(sessions, owner, "solar", now=day),
        "wind": add_device(sessions, owner, "wind", now=day),
        "site": add_device(sessions, meter_owner, "site", kind="consumption", now=day),
    }
    windows = [start + i * HOUR for i in range(hours)]
    for name, who, profile in (
        ("solar", owner, solar),
        ("wind", owner, wind),
        ("site", meter_owner, site),
    ):
        values = [(w, w + HOUR, profile(i)) for i, w in enumerate(windows) if profile(i) > 0]
        if values:
            reads(sessions, who, name, ReadKind.HISTORY, values, now=now)
    rid = create_reservation(
        sessions=sessions,
        principal=buyer_org,
        new=NewReservation(
            devices=frozenset({ids["solar"], ids["wind"]}),
            consumption_devices=frozenset({ids["site"]}),
            frequency=Frequency.HOURLY,
            start=start,
            end=start + timedelta(days=8),
            target_volume_wh=10**12,
            authority_to_exceed=False,
            wallet=wallet,
            gas_tier=Tier.FAST,
        ),
        now=now,
    ).reservation.id
    ctx = context(anvil, deployment, issuer_account.address)
    sender = new_sender(engine, anvil, issuer_account)
    fleet = Fleet(
        reservation_id=rid,
        owner=owner,
        buyer_org=buyer_org,
        solar=ids["solar"],
        wind=ids["wind"],
        site=ids["site"],
        windows=windows,
        issuance=ctx,
        matching=matching.MatchingContext(
            chain_id=CHAIN_ID,
            registry=deployment["address"],
            issuer=issuer_account.address,
            batch_size=batch_size,
        ),
        sender=sender,
        reader=RegistryEventReader(chain.w3, deployment["address"]),
        indexer=IndexerConfig(
            chain_id=CHAIN_ID, deployment_block=deployment["blockNumber"], confirmations=0
        ),
    )
    issue(sessions, fleet, now)
    return fleet


def issue(sessions: sessionmaker[Session], fleet: Fleet, now: datetime) -> None:
    issuance.plan(sessions=sessions, context=fleet.issuance, now=now)
    issue_all(sessions, fleet.issuance, fleet.sender, now)
    index(sessions, fleet, now)


def index(sessions: sessionmaker[Session], fleet: Fleet, now: datetime) -> None:
    index_once(sessions=sessions, source=fleet.reader, config=fleet.indexer, now=lambda: now)


def approve(chain: Chain, wallet: str, operator: str) -> None:
    chain.send(chain.registry.functions.setOperator(operator, True), wallet)


@dataclass
class Matched:
    passes: int
    claims: int
    matched_wh: int


def match_all(
    sessions: sessionmaker[Session], fleet: Fleet, now: datetime, *, passes: int = 30
) -> Matched:
    """Match, send, index until a pass submits nothing and nothing is in flight."""
    claims = matched_wh = 0
    for index_ in range(passes):
        index(sessions, fleet, now)
        report = matching.claim(sessions=sessions, context=fleet.matching, now=now)
        claims += report.claims_submitted
        matched_wh += report.matched_wh
        if report.claims_submitted == 0 and not in_flight(sessions):
            return Matched(index_ + 1, claims, matched_wh)
        for _ in range(200):
            fleet.sender.send_once()
            if not unconfirmed(sessions):
                break
    raise AssertionError(f"matching not done after {passes} passes")


def in_flight(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return bool(
            session.scalar(select(MatchingClaimRow.id).where(MatchingClaimRow.state == "sent"))
        )


def unconfirmed(sessions: sessionmaker[Session]) -> bool:
    from granular.adapters.db.outbox import TxRequest

    with sessions() as session:
        return bool(
            session.scalar(
                select(TxRequest.id).where(
                    TxRequest.state.not_in(["confirmed", "reverted", "failed"])
                )
            )
        )


def confirmed_by_window(sessions: sessionmaker[Session], rid: int) -> dict[datetime, int]:
    from granular.adapters.db.base import as_utc

    totals: dict[datetime, int] = {}
    with sessions() as session:
        for start, wh in session.execute(
            select(MatchingClaimRow.window_start, MatchingClaimRow.claimed_wh).where(
                MatchingClaimRow.reservation_id == rid, MatchingClaimRow.state == "confirmed"
            )
        ):
            totals[as_utc(start)] = totals.get(as_utc(start), 0) + int(wh)
    return totals


def mirror_slices(sessions: sessionmaker[Session]) -> list[tuple[int, int, str, int, int, int]]:
    """(id, certificate id, owner, kind, state, Wh) of every mirrored slice."""
    with sessions() as session:
        return [
            (int(a), int(b), str(c), int(d), int(e), int(f))
            for a, b, c, d, e, f in session.execute(
                select(
                    MirrorSliceRow.id,
                    MirrorSliceRow.certificate_id,
                    MirrorSliceRow.owner,
                    MirrorSliceRow.kind,
                    MirrorSliceRow.state,
                    MirrorSliceRow.quantity_wh,
                ).order_by(MirrorSliceRow.id)
            )
        ]


def slice_on_chain(w3: Web3, chain: Chain, slice_id: int) -> tuple[str, int, int, int, int]:
    result: tuple[str, int, int, int, int] = chain.registry.functions.sliceOf(slice_id).call()
    return result
