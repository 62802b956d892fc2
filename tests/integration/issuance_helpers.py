"""Helpers for the issuance tests: a fleet made through the real services (organizations,
devices, reads, reservations), an issuance context on the session anvil, and a driver that
runs plan / send / settle until nothing is pending."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.db import issuance as idb
from granular.adapters.db.accounts import Principal
from granular.adapters.db.devices import DeviceRevisionRow, DeviceRow
from granular.domain.energy import MaxEnergyPolicy, MaxEnergyRule
from granular.domain.gas import Tier
from granular.domain.reads import ReadKind
from granular.domain.units import EnergyUnit
from granular.domain.windows import Frequency
from granular.services import issuance
from granular.services.accounts import authenticate, create_api_key
from granular.services.devices import register_devices
from granular.services.meter_reads import SubmittedRead, ingest_reads
from granular.services.outbox import OutboxSender
from granular.services.reservations import NewReservation, create_reservation
from tests.integration.outbox_helpers import CHAIN_ID, make_sender

PHYSICAL = MaxEnergyPolicy(name=MaxEnergyRule.PHYSICAL)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def principal(sessions: sessionmaker[Session], organization: str, role: str) -> Principal:
    key = create_api_key(
        sessions=sessions, organization=organization, role=role, label=None, now=utc(2026, 1, 1)
    ).key
    return authenticate(sessions=sessions, authorization=f"Bearer {key}")


def add_device(
    sessions: sessionmaker[Session],
    owner: Principal,
    external_id: str,
    *,
    capacity_w: int = 100_000,
    kind: str = "production",
    now: datetime,
) -> int:
    raw = {
        "externalId": external_id,
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": capacity_w,
        "commissioningDate": "2020-01-01",
        "gridInterconnection": True,
        "offTaker": "School",
        "latitude": "-1.28",
        "longitude": "36.82",
    }
    results = register_devices(
        sessions=sessions, organization_id=owner.organization_id, rows=[(1, raw)], now=now
    )
    assert results[0].device is not None, results[0]
    device_id = results[0].device.id
    if kind != "production":
        with sessions.begin() as session:
            for table in (DeviceRow, DeviceRevisionRow):
                column = DeviceRow.id if table is DeviceRow else DeviceRevisionRow.device_id
                session.execute(update(table).where(column == device_id).values(kind=kind))
    return device_id


def reads(
    sessions: sessionmaker[Session],
    owner: Principal,
    external_id: str,
    kind: ReadKind,
    values: Sequence[tuple[datetime | None, datetime, int]],
    *,
    now: datetime,
) -> None:
    """(start, end, Wh) reads of one kind; start only for history."""
    result = ingest_reads(
        sessions=sessions,
        caller=owner,
        external_id=external_id,
        kind=kind,
        unit=EnergyUnit.WH,
        reads=[SubmittedRead(end=e, value=Decimal(v), start=s) for s, e, v in values],
        payload={"test": True},
        policy=PHYSICAL,
        now=now,
    )
    rejected = [o for o in result.batch.outcomes if o.error is not None]
    assert not rejected, rejected


def reserve(
    sessions: sessionmaker[Session],
    buyer: Principal,
    devices: Sequence[int],
    *,
    frequency: Frequency,
    start: datetime,
    end: datetime,
    wallet: str,
    target_wh: int = 10**12,
    authority: bool = False,
    now: datetime,
    tier: Tier = Tier.FAST,
    consumption: Sequence[int] = (),
) -> int:
    view = create_reservation(
        sessions=sessions,
        principal=buyer,
        new=NewReservation(
            devices=frozenset(devices),
            frequency=frequency,
            start=start,
            end=end,
            target_volume_wh=target_wh,
            authority_to_exceed=authority,
            wallet=wallet,
            gas_tier=tier,
            consumption_devices=frozenset(consumption),
        ),
        now=now,
    )
    return view.reservation.id


def context(
    anvil: Anvil, deployment: dict[str, Any], issuer: str, **overrides: Any
) -> issuance.IssuanceContext:
    return issuance.IssuanceContext(
        chain_id=CHAIN_ID,
        registry=deployment["address"],
        issuer=issuer,
        rpc_url=anvil.url,
        **overrides,
    )


@dataclass
class Driven:
    certificates: int
    failed: int
    rounds: int
    warnings: tuple[str, ...] = ()


def pending(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(idb.pending_batches(session=session, chain_id=CHAIN_ID))


def issue_all(
    sessions: sessionmaker[Session],
    ctx: issuance.IssuanceContext,
    sender: OutboxSender,
    now: datetime,
    *,
    rounds: int = 400,
) -> Driven:
    """Send and settle until no batch is pending (bounded, never a timed assertion)."""
    certificates = failed = 0
    warnings: list[str] = []
    for index in range(rounds):
        sender.send_once()
        report = issuance.settle(sessions=sessions, context=ctx, now=now)
        certificates += report.certificates_issued
        failed += report.items_failed
        warnings.extend(report.warnings)
        if pending(sessions) == 0:
            return Driven(certificates, failed, index + 1, tuple(warnings))
        time.sleep(0.005)
    raise AssertionError(f"batches still pending after {rounds} rounds")


def new_sender(
    engine: Engine, anvil: Anvil, account: LocalAccount, **overrides: Any
) -> OutboxSender:
    return make_sender(engine, anvil.url, account, **overrides)


def items(sessions: sessionmaker[Session], reservation_id: int) -> list[idb.ItemRecord]:
    with sessions() as session:
        return idb.items_of_reservation(session=session, reservation_id=reservation_id)


def certificate_of(sessions: sessionmaker[Session], item_id: int) -> int:
    with sessions() as session:
        return idb.certificate_ids_of_items(session=session, item_ids=[item_id])[item_id]


def on_chain(w3: Web3, registry: Any, certificate_id: int) -> tuple[str, int, int, int, int]:
    """sliceOf(certificate id): (owner, kind, state, quantity, certificate id)."""
    result: tuple[str, int, int, int, int] = registry.functions.sliceOf(certificate_id).call()
    return result


def reservation_row(sessions: sessionmaker[Session], reservation_id: int) -> Any:
    from granular.adapters.db.reservations import ReservationRow

    with sessions() as session:
        return session.execute(
            select(
                ReservationRow.issued_wh,
                ReservationRow.failed_wh,
                ReservationRow.leftover_wh,
                ReservationRow.completed_at,
            ).where(ReservationRow.id == reservation_id)
        ).one()
