"""The indexer on a real anvil and the real registry, on SQLite and PostgreSQL: the mirror
after random commands and a reorg equals a reindex from scratch, and equals the chain."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from granular.adapters.chain.events import RegistryEventReader
from granular.adapters.db import mirror as db
from granular.adapters.db.mirror import (
    MirrorBlockRow,
    MirrorCertificateRow,
    MirrorClaimRow,
    MirrorCursorRow,
    MirrorEventRow,
    MirrorOperatorRow,
    MirrorSliceRow,
    MirrorWalletRow,
)
from granular.services.indexer import IndexerConfig, ReorgTooDeep, index_once, reindex
from tests.integration.chain import Chain
from tests.integration.registry_ops import RegistryOps

CHAIN_ID = 31337


def now() -> datetime:
    return datetime.now(UTC)


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    return w3.provider.make_request(method, list(params))["result"]  # type: ignore[arg-type]


def dump(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every mirror row but the raw events' surrogate ids and the cursor's timestamp."""
    tables: dict[str, tuple[Any, Any]] = {
        "certificates": (MirrorCertificateRow, MirrorCertificateRow.id),
        "slices": (MirrorSliceRow, MirrorSliceRow.id),
        "claims": (MirrorClaimRow, MirrorClaimRow.id),
        "wallets": (MirrorWalletRow, MirrorWalletRow.address),
        "operators": (MirrorOperatorRow, MirrorOperatorRow.wallet),
    }
    result: dict[str, list[tuple[Any, ...]]] = {}
    with sessions() as session:
        for name, (model, order) in tables.items():
            columns = [c for c in model.__table__.columns]
            rows = session.execute(select(*columns).order_by(order, *columns)).all()
            result[name] = [tuple(row) for row in rows]
        result["events"] = [
            tuple(row)
            for row in session.execute(
                select(
                    MirrorEventRow.tx_hash,
                    MirrorEventRow.log_index,
                    MirrorEventRow.block_number,
                    MirrorEventRow.block_hash,
                    MirrorEventRow.name,
                    MirrorEventRow.args,
                ).order_by(MirrorEventRow.block_number, MirrorEventRow.log_index)
            )
        ]
        result["cursor"] = [
            tuple(row)
            for row in session.execute(
                select(MirrorCursorRow.block_number, MirrorCursorRow.block_hash)
            )
        ]
    return result


def assert_mirror_equals_chain(
    sessions: sessionmaker[Session], chain: Chain, wallets: list[str]
) -> None:
    with sessions() as session:
        slices = session.scalars(select(MirrorSliceRow)).all()
        assert slices, "the mirror holds no slice"
        next_id = chain.registry.functions.nextId().call()
        assert {s.id for s in slices} == set(range(1, next_id))
        for row in slices:
            owner, kind, state, quantity_wh, certificate_id = chain.registry.functions.sliceOf(
                row.id
            ).call()
            assert (row.owner, row.kind, row.state, row.quantity_wh, row.certificate_id) == (
                owner,
                kind,
                state,
                quantity_wh,
                certificate_id,
            ), f"slice {row.id}"
        for wallet in wallets:
            closed, active = chain.registry.functions.walletOf(wallet).call()
            stored = session.get(MirrorWalletRow, wallet)
            if stored is None:
                assert (closed, active) == (False, 0), wallet
            else:
                assert (stored.closed, stored.active_slices) == (closed, active), wallet
            for operator in wallets:
                if operator == wallet:
                    continue
                approved = chain.registry.functions.isOperator(wallet, operator).call()
                op_row = session.get(MirrorOperatorRow, (wallet, operator))
                assert (op_row.approved if op_row else False) == approved


@pytest.fixture
def reader(w3: Web3, deployment: dict[str, Any]) -> RegistryEventReader:
    return RegistryEventReader(w3, deployment["address"], max_range_blocks=5)


@pytest.fixture
def config(deployment: dict[str, Any]) -> IndexerConfig:
    return IndexerConfig(
        chain_id=CHAIN_ID,
        deployment_block=deployment["blockNumber"],
        confirmations=0,
        window_blocks=64,
        chunk_blocks=7,
    )


@pytest.fixture
def wallets(w3: Web3) -> list[str]:
    return list(w3.eth.accounts[1:7])


def test_incremental_mirror_with_a_reorg_equals_reindex_and_the_chain(
    sessions: sessionmaker[Session],
    chain: Chain,
    w3: Web3,
    issuer: str,
    wallets: list[str],
    reader: RegistryEventReader,
    config: IndexerConfig,
) -> None:
    ops = RegistryOps(chain, issuer, wallets, sessions, seed=8)
    index: Callable[[], Any] = lambda: index_once(  # noqa: E731
        sessions=sessions, source=reader, config=config, now=now
    )
    ops.issue(3)
    ops.random(12)
    index()
    ops.random(12)
    ops.close(wallets[-1])
    index()
    fork_point = rpc(w3, "evm_snapshot")
    fork_block = w3.eth.block_number
    ops.random(8)
    first = index()
    assert first.reorg_ancestor is None
    before_reorg = dump(sessions)
    assert rpc(w3, "evm_revert", fork_point) is True
    # Another branch from the fork point: other commands, so other blocks.
    other = RegistryOps(chain, issuer, wallets[:-1], sessions, seed=99)
    other.slice_ids = set(ops.slice_ids)
    other.closed = set(ops.closed)
    other.random(5)
    rpc(w3, "anvil_mine", "0x2")
    report = index()
    assert report.reorg_ancestor is not None
    assert report.reorg_ancestor <= fork_block
    assert report.to_block == w3.eth.block_number
    incremental = dump(sessions)
    assert incremental != before_reorg
    assert incremental["cursor"] == [
        (w3.eth.block_number, "0x" + bytes(w3.eth.get_block("latest")["hash"]).hex())
    ]
    # Events of the abandoned branch are gone: every stored block hash is on the chain now.
    for _, _, number, block_hash, _, _ in incremental["events"]:
        assert "0x" + bytes(w3.eth.get_block(number)["hash"]).hex() == block_hash

    assert_mirror_equals_chain(sessions, chain, wallets)
    rebuilt = reindex(sessions=sessions, source=reader, config=config, now=now)
    assert rebuilt.from_block == config.deployment_block
    assert dump(sessions) == incremental
    with sessions() as session:
        names = {e.name for e in session.scalars(select(MirrorEventRow))}
        assert {"CertificateIssued", "BatchIssued", "SliceSplit", "SliceClaimed"} <= names
        assert {"SliceTransferred", "SliceWithdrawn", "WalletClosed", "OperatorSet"} <= names
        joined = session.scalars(
            select(MirrorCertificateRow).where(MirrorCertificateRow.fuel_code.is_not(None))
        ).all()
        assert joined, "no certificate was joined to its header"
        assert all(c.country in ("KE", "NG", "DE") for c in joined)
        assert all(c.batch_id is not None for c in session.scalars(select(MirrorCertificateRow)))


def test_a_second_pass_with_no_new_block_changes_nothing(
    sessions: sessionmaker[Session],
    chain: Chain,
    issuer: str,
    wallets: list[str],
    reader: RegistryEventReader,
    config: IndexerConfig,
) -> None:
    ops = RegistryOps(chain, issuer, wallets, sessions, seed=3)
    ops.random(6)
    index_once(sessions=sessions, source=reader, config=config, now=now)
    once = dump(sessions)
    report = index_once(sessions=sessions, source=reader, config=config, now=now)
    assert report.events == 0
    assert dump(sessions) == once


def test_confirmations_hold_back_the_newest_blocks(
    sessions: sessionmaker[Session],
    chain: Chain,
    w3: Web3,
    issuer: str,
    wallets: list[str],
    reader: RegistryEventReader,
    config: IndexerConfig,
) -> None:
    ops = RegistryOps(chain, issuer, wallets, sessions, seed=5)
    ops.issue(1)
    issued_block = w3.eth.block_number
    held = IndexerConfig(
        chain_id=config.chain_id, deployment_block=config.deployment_block, confirmations=3
    )
    report = index_once(sessions=sessions, source=reader, config=held, now=now)
    assert report.to_block == issued_block - 3
    with sessions() as session:
        assert session.scalars(select(MirrorSliceRow)).all() == []
    rpc(w3, "anvil_mine", "0x3")
    index_once(sessions=sessions, source=reader, config=held, now=now)
    with sessions() as session:
        assert len(session.scalars(select(MirrorSliceRow)).all()) == 1


def test_a_reorg_deeper_than_the_kept_window_asks_for_a_reindex(
    sessions: sessionmaker[Session],
    chain: Chain,
    w3: Web3,
    issuer: str,
    wallets: list[str],
    reader: RegistryEventReader,
    deployment: dict[str, Any],
) -> None:
    narrow = IndexerConfig(
        chain_id=CHAIN_ID, deployment_block=deployment["blockNumber"], window_blocks=2
    )
    fork_point = rpc(w3, "evm_snapshot")
    ops = RegistryOps(chain, issuer, wallets, sessions, seed=11)
    ops.random(6)
    index_once(sessions=sessions, source=reader, config=narrow, now=now)
    assert rpc(w3, "evm_revert", fork_point) is True
    RegistryOps(chain, issuer, wallets, sessions, seed=12).random(7)
    with pytest.raises(ReorgTooDeep):
        index_once(sessions=sessions, source=reader, config=narrow, now=now)


def test_another_registry_on_the_same_database_is_refused(
    sessions: sessionmaker[Session],
    chain: Chain,
    w3: Web3,
    reader: RegistryEventReader,
    config: IndexerConfig,
) -> None:
    index_once(sessions=sessions, source=reader, config=config, now=now)
    stranger = RegistryEventReader(w3, "0x" + "12" * 20)
    with pytest.raises(Exception, match="one registry per database|mirrors registry"):
        index_once(sessions=sessions, source=stranger, config=config, now=now)


def test_kept_blocks_stay_within_the_window(
    sessions: sessionmaker[Session],
    chain: Chain,
    w3: Web3,
    reader: RegistryEventReader,
    deployment: dict[str, Any],
) -> None:
    rpc(w3, "anvil_mine", "0x10")
    small = IndexerConfig(
        chain_id=CHAIN_ID, deployment_block=deployment["blockNumber"], window_blocks=4
    )
    index_once(sessions=sessions, source=reader, config=small, now=now)
    with sessions() as session:
        numbers = sorted(session.scalars(select(MirrorBlockRow.number)))
    head = w3.eth.block_number
    assert numbers == list(range(head - 3, head + 1))
    assert db.recent_blocks is not None
