"""Registry commands accepted over HTTP, and wallet names (DESIGN.md §5, issue 8 §4).

- `registry_commands`: one row per accepted command (the "request id" the API returns): its
  kind, who signed it (`signer`: the wallet owner or operator of a relayed request, the
  issuer for direct commands), the forwarder nonces it holds (`nonce` .. `nonce` +
  `nonce_count` - 1), and the outbox keys of the transactions that carry it. A relayed
  command has exactly one transaction (`relay_key`), so the nonces it holds are free again
  once that transaction is final (a relayed call that reverts does not consume its nonce).
- `wallet_names`: the off-chain name of an address, changed only by a request its owner
  signed for the current `revision`.

Query functions are keyword-only, never commit and return plain values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base, as_utc
from granular.adapters.db.outbox import FINAL_STATES, Id, TxRequest


class RegistryCommandRow(Base):
    __tablename__ = "registry_commands"
    __table_args__ = (
        Index("ix_registry_commands_signer", "chain_id", "signer"),
        Index("ix_registry_commands_relay_key", "chain_id", "relay_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    signer: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    nonce_count: Mapped[int] = mapped_column(Integer)
    deadline_s: Mapped[int | None] = mapped_column(BigInteger)
    relay_key: Mapped[str | None] = mapped_column(String(200))
    tx_keys: Mapped[str] = mapped_column(Text)  # JSON list of outbox idempotency keys
    summary: Mapped[str] = mapped_column(Text)  # JSON: the command's arguments
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WalletNameRow(Base):
    __tablename__ = "wallet_names"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: int
    chain_id: int
    kind: str
    signer: str
    nonce: int | None
    nonce_count: int
    deadline_s: int | None
    tx_keys: list[str]
    summary: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WalletName:
    address: str
    name: str
    revision: int
    created_at: datetime
    updated_at: datetime


def _record(row: RegistryCommandRow) -> CommandRecord:
    return CommandRecord(
        id=row.id,
        chain_id=row.chain_id,
        kind=row.kind,
        signer=row.signer,
        nonce=row.nonce,
        nonce_count=row.nonce_count,
        deadline_s=row.deadline_s,
        tx_keys=list(json.loads(row.tx_keys)),
        summary=dict(json.loads(row.summary)),
        created_at=as_utc(row.created_at),
    )


def add_command(
    *,
    session: Session,
    chain_id: int,
    kind: str,
    signer: str,
    nonce: int | None,
    nonce_count: int,
    deadline_s: int | None,
    relay_key: str | None,
    tx_keys: list[str],
    summary: dict[str, Any],
    now: datetime,
) -> int:
    row = RegistryCommandRow(
        chain_id=chain_id,
        kind=kind,
        signer=signer,
        nonce=nonce,
        nonce_count=nonce_count,
        deadline_s=deadline_s,
        relay_key=relay_key,
        tx_keys=json.dumps(tx_keys),
        summary=json.dumps(summary, sort_keys=True),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def get_command(*, session: Session, command_id: int) -> CommandRecord | None:
    row = session.get(RegistryCommandRow, command_id)
    return _record(row) if row is not None else None


def command_for_relay_key(
    *, session: Session, chain_id: int, relay_key: str
) -> CommandRecord | None:
    row = session.scalars(
        select(RegistryCommandRow).where(
            RegistryCommandRow.chain_id == chain_id, RegistryCommandRow.relay_key == relay_key
        )
    ).first()
    return _record(row) if row is not None else None


def pending_nonces(*, session: Session, chain_id: int, signer: str) -> list[int]:
    """Forwarder nonces of `signer` held by relayed commands whose transaction is not final."""
    rows = session.execute(
        select(RegistryCommandRow.nonce, RegistryCommandRow.nonce_count)
        .join(
            TxRequest,
            (TxRequest.chain_id == RegistryCommandRow.chain_id)
            & (TxRequest.idempotency_key == RegistryCommandRow.relay_key),
        )
        .where(
            RegistryCommandRow.chain_id == chain_id,
            RegistryCommandRow.signer == signer,
            RegistryCommandRow.nonce.is_not(None),
            TxRequest.state.not_in([state.value for state in FINAL_STATES]),
        )
    ).tuples()
    return sorted(
        nonce + offset for nonce, count in rows if nonce is not None for offset in range(count)
    )


def lock_signer(*, session: Session, chain_id: int, signer: str) -> None:
    """Serialise the acceptance of relayed commands of one signer until the transaction
    ends, so two requests for one nonce cannot both be accepted. PostgreSQL: a transaction
    advisory lock; SQLite serialises writers already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"relay:{chain_id}:{signer}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def get_wallet_name(*, session: Session, address: str) -> WalletName | None:
    row = session.get(WalletNameRow, address)
    if row is None:
        return None
    return WalletName(
        row.address, row.name, row.revision, as_utc(row.created_at), as_utc(row.updated_at)
    )


def add_wallet_name(*, session: Session, address: str, name: str, now: datetime) -> None:
    session.add(
        WalletNameRow(address=address, name=name, revision=1, created_at=now, updated_at=now)
    )
    session.flush()


def rename_wallet(
    *, session: Session, address: str, name: str, revision: int, now: datetime
) -> bool:
    """Set the name if the stored revision is still `revision`; False if it moved on."""
    result = session.execute(
        update(WalletNameRow)
        .where(WalletNameRow.address == address, WalletNameRow.revision == revision)
        .values(name=name, revision=revision + 1, updated_at=now)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
