"""The indexer's transaction boundary without a chain (a scripted block source), on SQLite
and PostgreSQL: a chunk whose events do not fit the mirror stores nothing, and a chunk that
does not link to the cursor is not stored until a pass walks back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.events import BlockRef
from granular.adapters.db.mirror import MirrorCursorRow, MirrorEventRow, MirrorSliceRow
from granular.domain.mirror import (
    CertificateIssued,
    EventMeta,
    MirrorInconsistent,
    RegistryEvent,
    SliceWithdrawn,
)
from granular.domain.slices import Kind
from granular.services.indexer import IndexerConfig, index_once

OWNER = "0x" + "Ab" * 20
CONFIG = IndexerConfig(chain_id=31337, deployment_block=1, chunk_blocks=3, window_blocks=10)


def now() -> datetime:
    return datetime.now(UTC)


def block_hash(number: int, fork: str) -> str:
    return "0x" + fork * 2 + f"{number:062x}"


@dataclass
class ScriptedChain:
    """Blocks 0..head; blocks from `fork_from` on carry the `fork` tag in their hashes."""

    head_number: int
    events: dict[int, list[RegistryEvent]] = field(default_factory=dict)
    fork_from: int = 10**9
    fork: str = "a"
    registry: str = "0x" + "12" * 20

    def hash_of(self, number: int) -> str:
        return block_hash(number, self.fork if number >= self.fork_from else "0")

    def head(self) -> int:
        return self.head_number

    def block(self, number: int) -> BlockRef | None:
        if number > self.head_number:
            return None
        parent = self.hash_of(number - 1) if number > 0 else "0x" + "00" * 32
        return BlockRef(number, self.hash_of(number), parent)

    def logs(self, from_block: int, to_block: int) -> list[RegistryEvent]:
        found: list[RegistryEvent] = []
        for number in range(from_block, to_block + 1):
            found.extend(self.events.get(number, []))
        return found

    def issue(self, number: int, certificate_id: int) -> None:
        meta = EventMeta(number, self.hash_of(number), "0x" + f"{certificate_id:064x}", 0)
        self.events.setdefault(number, []).append(
            CertificateIssued(meta, certificate_id, OWNER, Kind.PRODUCTION, 10, "0x" + "00" * 32)
        )


def counts(sessions: sessionmaker[Session]) -> tuple[int, int, int | None]:
    with sessions() as session:
        events = session.scalar(select(func.count()).select_from(MirrorEventRow))
        slices = session.scalar(select(func.count()).select_from(MirrorSliceRow))
        cursor = session.scalar(select(MirrorCursorRow.block_number))
    return int(events or 0), int(slices or 0), cursor


def test_a_chunk_that_does_not_fit_the_mirror_stores_nothing(
    sessions: sessionmaker[Session],
) -> None:
    chain = ScriptedChain(head_number=6)
    chain.issue(2, 1)
    index_once(sessions=sessions, source=chain, config=CONFIG, now=now)
    assert counts(sessions) == (1, 1, 6)
    chain.head_number = 9
    chain.issue(7, 2)
    meta = EventMeta(8, chain.hash_of(8), "0x" + "ff" * 32, 0)
    chain.events[8] = [SliceWithdrawn(meta, 99, OWNER)]  # a slice the mirror never saw
    with pytest.raises(MirrorInconsistent):
        index_once(sessions=sessions, source=chain, config=CONFIG, now=now)
    assert counts(sessions) == (1, 1, 6)  # certificate 2 (same chunk) was not kept either


def test_a_fork_above_the_cursor_is_walked_back_and_replaced(
    sessions: sessionmaker[Session],
) -> None:
    chain = ScriptedChain(head_number=8)
    chain.issue(2, 1)
    chain.issue(7, 2)
    index_once(sessions=sessions, source=chain, config=CONFIG, now=now)
    assert counts(sessions) == (2, 2, 8)
    # Blocks 6.. are replaced: certificate 2 is gone, certificate 3 is in block 9 instead.
    chain.fork_from, chain.fork = 6, "b"
    chain.events = {}
    chain.issue(2, 1)
    chain.head_number = 9
    chain.issue(9, 2)
    report = index_once(sessions=sessions, source=chain, config=CONFIG, now=now)
    assert report.reorg_ancestor == 5
    assert counts(sessions) == (2, 2, 9)
    with sessions() as session:
        blocks = sorted(session.scalars(select(MirrorEventRow.block_number)))
    assert blocks == [2, 9]
