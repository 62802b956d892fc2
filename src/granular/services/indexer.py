"""The registry mirror's indexer (DESIGN.md §7): chain events -> mirror tables.

Guarantees:
- Each chunk of blocks is one DB transaction: its raw events, the derived rows they change,
  the recent blocks and the cursor commit together or not at all. A crash anywhere resumes
  from the last committed cursor; raw events are unique on (chain id, tx hash, log index),
  so nothing is counted twice.
- Reorgs: every pass first compares the cursor's block hash with the chain's. On a mismatch
  it walks back over the kept blocks (the unconfirmed window) to the highest one whose hash
  the chain still has (the common ancestor), deletes the raw events and blocks above it,
  rebuilds the derived tables from the raw events that remain (the fold of
  `domain.mirror.apply`), moves the cursor to the ancestor, all in one transaction, and
  resumes from there. A chunk whose blocks do not link (parent hash of each kept block ==
  hash of the one before, the first one's parent == the cursor's hash) or whose events name
  a block hash other than the block read is not stored: the pass stops, the next one walks
  back. A reorg deeper than the kept window raises `ReorgTooDeep` (run `reindex`).
- `reindex` empties the mirror (wallet names kept) and indexes again from the deployment
  block: its result equals the incremental one.

The indexer reads up to head - `confirmations`; the last `window_blocks` blocks below that
are kept to detect reorgs. With confirmations 0 the mirror follows the head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import mirror as db
from granular.adapters.db.headers import get_headers
from granular.domain.mirror import (
    HeaderFields,
    OperatorSet,
    RegistryEvent,
    apply,
    header_fields,
    slice_ids_of,
    wallets_of,
)
from granular.errors import ConfigurationError, GranularError

log = logging.getLogger(__name__)


class BlockSource(Protocol):
    """What the indexer needs of the chain (`adapters.chain.events.RegistryEventReader`)."""

    registry: str

    def head(self) -> int: ...

    def block(self, number: int) -> BlockLike | None: ...

    def logs(self, from_block: int, to_block: int) -> list[RegistryEvent]: ...


class BlockLike(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def hash(self) -> str: ...

    @property
    def parent_hash(self) -> str: ...


class ReorgTooDeep(GranularError):
    code = "reorg_too_deep"

    def __init__(self, cursor_block: int, oldest_kept: int | None) -> None:
        super().__init__(
            f"the chain no longer has indexed block {cursor_block} and no kept block "
            f"(oldest {oldest_kept}) is a common ancestor: run `granular reindex`",
            {"field": "blockNumber", "value": cursor_block, "rule": "reorg within the window"},
        )


@dataclass(frozen=True, slots=True)
class IndexReport:
    from_block: int
    to_block: int  # the cursor after the pass (from_block - 1 when nothing was read)
    events: int
    reorg_ancestor: int | None = None  # the common ancestor a reorg walked back to
    stopped_on_fork: bool = False  # a chunk did not link; the next pass walks back


@dataclass(frozen=True, slots=True)
class IndexerConfig:
    chain_id: int
    deployment_block: int
    confirmations: int = 0
    window_blocks: int = 64
    chunk_blocks: int = 2_000


def _the_cursor(session: Session, chain_id: int, registry: str) -> db.Cursor | None:
    cursors = db.get_cursors(session=session)
    for cursor in cursors:
        if (cursor.chain_id, cursor.registry) != (chain_id, registry):
            raise ConfigurationError(
                f"this database mirrors registry {cursor.registry} on chain {cursor.chain_id}, "
                f"not {registry} on chain {chain_id}; use another database or reindex",
                {"field": "registry", "value": registry, "rule": "one registry per database"},
            )
    return cursors[0] if cursors else None


def apply_events(*, session: Session, events: Sequence[RegistryEvent]) -> None:
    """Fold `events` (chain order) into the derived tables: load the rows they touch, apply,
    write back the changed rows. New certificates get their header fields joined by hash."""
    if not events:
        return
    slice_ids: set[int] = set()
    wallets: set[str] = set()
    operators: set[tuple[str, str]] = set()
    for event in events:
        slice_ids |= slice_ids_of(event)
        wallets |= wallets_of(event)
        if isinstance(event, OperatorSet):
            operators.add((event.wallet, event.operator))
    loaded = db.load_state(
        session=session, slice_ids=slice_ids, wallets=wallets, operators=operators
    )
    for event in events:
        apply(loaded.state, event)
    new = loaded.state.changed_certificates - loaded.existing_certificates
    hashes = {i: loaded.state.certificates[i].data_hash for i in new}
    found = get_headers(session=session, hashes=hashes.values())
    fields: dict[int, HeaderFields] = {
        i: header_fields(found.get(digest)) for i, digest in hashes.items()
    }
    db.save_state(session=session, loaded=loaded, headers=fields)


def rebuild_derived(*, session: Session, chain_id: int, batch: int = 5_000) -> int:
    """Empty the derived tables and fold every stored raw event again; returns the count."""
    db.clear_mirror(session=session, keep_events=True)
    after = 0
    total = 0
    while True:
        rows = db.stored_events(session=session, chain_id=chain_id, after_id=after, limit=batch)
        if not rows:
            return total
        apply_events(session=session, events=[event for _, event in rows])
        after = rows[-1][0]
        total += len(rows)


def _walk_back(
    session: Session, source: BlockSource, config: IndexerConfig, cursor: db.Cursor
) -> db.Cursor:
    """The cursor moved to the common ancestor, with everything above it undone."""
    kept = db.recent_blocks(session=session, chain_id=config.chain_id)
    for number, block_hash, _parent in kept:
        if number > cursor.block_number:
            continue
        on_chain = source.block(number)
        if on_chain is not None and on_chain.hash == block_hash:
            dropped = db.delete_events_above(
                session=session, chain_id=config.chain_id, block_number=number
            )
            replayed = rebuild_derived(session=session, chain_id=config.chain_id)
            log.warning(
                "mirror reorg: cursor %s -> common ancestor %s; %s events dropped, %s replayed",
                cursor.block_number,
                number,
                dropped,
                replayed,
            )
            return db.Cursor(
                cursor.chain_id, cursor.registry, cursor.deployment_block, number, block_hash
            )
    raise ReorgTooDeep(cursor.block_number, kept[-1][0] if kept else None)


def index_once(
    *,
    sessions: sessionmaker[Session],
    source: BlockSource,
    config: IndexerConfig,
    now: Callable[[], datetime],
    max_chunks: int | None = None,
) -> IndexReport:
    """One pass: walk back if the chain forked below the cursor, then read chunks of blocks
    up to head - confirmations, each chunk committed with the cursor."""
    registry = source.registry
    ancestor: int | None = None
    with sessions.begin() as session:
        cursor = _the_cursor(session, config.chain_id, registry)
        if cursor is not None:
            on_chain = source.block(cursor.block_number)
            if on_chain is None or on_chain.hash != cursor.block_hash:
                cursor = _walk_back(session, source, config, cursor)
                db.put_cursor(session=session, cursor=cursor, now=now())
                ancestor = cursor.block_number
    start = config.deployment_block if cursor is None else cursor.block_number + 1
    target = source.head() - config.confirmations
    events_seen = 0
    chunks = 0
    position = start
    while position <= target and (max_chunks is None or chunks < max_chunks):
        end = min(target, position + config.chunk_blocks - 1)
        stored = _index_chunk(sessions, source, config, cursor, position, end, target, now)
        if stored is None:
            return IndexReport(start, position - 1, events_seen, ancestor, stopped_on_fork=True)
        cursor, count = stored
        events_seen += count
        position = end + 1
        chunks += 1
    return IndexReport(start, position - 1, events_seen, ancestor)


def _index_chunk(
    sessions: sessionmaker[Session],
    source: BlockSource,
    config: IndexerConfig,
    cursor: db.Cursor | None,
    first: int,
    last: int,
    target: int,
    now: Callable[[], datetime],
) -> tuple[db.Cursor, int] | None:
    """Read and store blocks first..last; None when they do not link to the cursor."""
    keep_from = max(first, target - config.window_blocks + 1)
    events = source.logs(first, last)
    blocks = []
    for number in range(keep_from, last + 1):
        block = source.block(number)
        if block is None:
            return None
        blocks.append(block)
    last_block = blocks[-1] if blocks else source.block(last)
    if last_block is None:
        return None
    previous = cursor.block_hash if cursor is not None and keep_from == first else None
    for block in blocks:
        if previous is not None and block.parent_hash != previous:
            return None
        previous = block.hash
    by_number = {block.number: block.hash for block in blocks}
    for event in events:
        expected = by_number.get(event.meta.block_number)
        if expected is not None and expected != event.meta.block_hash:
            return None
    registry = source.registry
    moved = db.Cursor(
        config.chain_id,
        registry,
        config.deployment_block if cursor is None else cursor.deployment_block,
        last_block.number,
        last_block.hash,
    )
    with sessions.begin() as session:
        db.put_events(session=session, chain_id=config.chain_id, events=events)
        apply_events(session=session, events=events)
        db.put_blocks(
            session=session,
            chain_id=config.chain_id,
            blocks=[(b.number, b.hash, b.parent_hash) for b in blocks],
            keep_from=target - config.window_blocks + 1,
        )
        db.put_cursor(session=session, cursor=moved, now=now())
    return moved, len(events)


def reindex(
    *,
    sessions: sessionmaker[Session],
    source: BlockSource,
    config: IndexerConfig,
    now: Callable[[], datetime],
) -> IndexReport:
    """Empty the mirror (wallet names kept) and index from the deployment block to the
    target in one call."""
    with sessions.begin() as session:
        db.clear_mirror(session=session, keep_events=False)
    return index_once(sessions=sessions, source=source, config=config, now=now)


def open_source(*, rpc_url: str, registry: str) -> tuple[BlockSource, int]:
    """The registry's event reader on `rpc_url`, and the chain id the node reports (for
    the CLI and the daemon job: `IndexerConfig(chain_id=..., deployment_block=record's
    blockNumber, confirmations=Settings' confirmations)`)."""
    from granular.adapters.chain.client import connect
    from granular.adapters.chain.events import RegistryEventReader

    w3, chain_id = connect(rpc_url)
    return RegistryEventReader(w3, registry), chain_id
