"""The outbox's pure parts: what a node's refusal means, depth, backoff, revert data, and
`decide`, what the sender does with a request in flight."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from granular.adapters.chain.rpc import (
    BroadcastResult,
    RpcError,
    classify_broadcast_error,
    counts_as_sent,
)
from granular.adapters.db.lease import _local_holder_is_dead, advisory_key
from granular.domain.outbox import (
    REVERT_REASON_GRACE_BLOCKS,
    AttemptFacts,
    Decision,
    InFlight,
    Receipt,
    RequestState,
    Verdict,
    backoff_s,
    confirmation_depth,
    decide,
)
from granular.services.outbox import OutboxConfig, OutboxConfigInvalid


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("already known", BroadcastResult.KNOWN),  # geth
        ("transaction already imported", BroadcastResult.KNOWN),  # anvil
        ("Transaction with the same hash was already imported.", BroadcastResult.KNOWN),  # OE
        ("AlreadyKnown", BroadcastResult.KNOWN),  # Nethermind
        ("nonce too low", BroadcastResult.NONCE_USED),  # geth, anvil
        ("Transaction nonce is too low. Try incrementing the nonce.", BroadcastResult.NONCE_USED),
        ("OldNonce, Current nonce: 7, nonce of rejected tx: 3", BroadcastResult.NONCE_USED),
        ("replacement transaction underpriced", BroadcastResult.UNDERPRICED),
        ("Transaction gas price is too low to replace", BroadcastResult.UNDERPRICED),
        ("transaction underpriced", BroadcastResult.UNDERPRICED),  # geth: under the pool minimum
        # Under the base fee (anvil, reth) or the node's minimum (OpenEthereum, Nethermind): a
        # replacement at a higher fee is the remedy, so the deadline must run.
        ("max fee per gas less than block base fee", BroadcastResult.UNDERPRICED),
        (
            "Transaction gas price is too low. It does not satisfy your node's minimal gas price",
            BroadcastResult.UNDERPRICED,
        ),
        ("FeeTooLow, MaxFeePerGas too low.", BroadcastResult.UNDERPRICED),
        ("insufficient funds for gas * price + value", BroadcastResult.REJECTED),
        ("intrinsic gas too low", BroadcastResult.REJECTED),
        ("Out of gas: gas required exceeds allowance: 30000000", BroadcastResult.REJECTED),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_a_node_refusal_is_classified(message: str, expected: BroadcastResult) -> None:
    assert classify_broadcast_error(message) is expected


def test_only_a_plain_rejection_does_not_count_as_sent() -> None:
    assert [r for r in BroadcastResult if not counts_as_sent(r)] == [BroadcastResult.REJECTED]


def test_depth_counts_the_block_itself() -> None:
    assert confirmation_depth(head_block=10, mined_block=10) == 1
    assert confirmation_depth(head_block=12, mined_block=10) == 3


@pytest.mark.parametrize(
    ("failures", "expected_s"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (10_000, 8.0)],
    ids=["first", "doubled", "twice doubled", "exactly the max", "capped", "no overflow"],
)
def test_backoff_doubles_from_the_initial_pause_up_to_the_max(
    failures: int, expected_s: float
) -> None:
    assert backoff_s(failures=failures, initial_s=1.0, max_s=8.0) == expected_s


def test_revert_data_is_read_from_the_answers_of_different_nodes() -> None:
    selector = "0xdeadbeef" + "00" * 32
    assert RpcError("eth_call", 3, "execution reverted", selector).revert_data() == bytes.fromhex(
        selector[2:]
    )
    assert RpcError("eth_call", -32015, "VM execution error.", f"Reverted {selector}").revert_data()
    assert RpcError("eth_call", 3, "reverted", {"data": selector}).revert_data()
    assert RpcError("eth_call", -32000, "execution reverted", None).revert_data() is None
    assert RpcError("eth_estimateGas", -32000, "execution reverted").is_revert
    assert RpcError("eth_estimateGas", 3, "custom error 0xdeadbeef").is_revert
    # OpenEthereum (Energy Web Chain) says it only in `data`.
    assert RpcError("eth_call", -32015, "VM execution error.", f"Reverted {selector}").is_revert
    assert RpcError(
        "eth_estimateGas", -32016, "The execution failed due to an exception.", "Reverted"
    ).is_revert
    assert not RpcError("eth_estimateGas", -32000, "insufficient funds").is_revert
    assert not RpcError("eth_estimateGas", -32003, "gas required exceeds allowance").is_revert
    assert not RpcError("eth_call", -32000, "header not found", selector).is_revert


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("confirmations", -1),
        ("poll_interval_s", 0),
        ("batch_size", 0),
        ("gas_limit_margin_bp", 9_999),
        ("backoff_max_s", 0.5),
    ],
    ids=["negative K", "zero poll interval", "empty batch", "margin below 1x", "max < initial"],
)
def test_config_refuses_values_out_of_range(field: str, value: object) -> None:
    with pytest.raises(OutboxConfigInvalid) as raised:
        OutboxConfig(chain_id=1, **{field: value})  # type: ignore[arg-type]
    assert raised.value.code == "outbox_config_invalid"
    assert raised.value.details["field"] == field


# --- decide -------------------------------------------------------------------------------

A, B, C = "0xaa", "0xbb", "0xcc"
NOW = 1_000_000
DEADLINE = 30


def _decide(
    state: RequestState,
    attempts: list[tuple[str, int | None]],
    *,
    receipt: Receipt | None = None,
    recorded: tuple[str, str] | None = None,
    head: int = 100,
    k: int = 3,
    resume: bool = False,
    in_pool: dict[str, bool] | None = None,
    readable: bool = True,
) -> Decision:
    request = InFlight(
        state=state,
        tx_hash=recorded[0] if recorded else None,
        block_hash=recorded[1] if recorded else None,
        attempts=tuple(AttemptFacts(h, sent) for h, sent in attempts),
    )
    return decide(
        request,
        receipt=receipt,
        head_block=head,
        confirmations=k,
        now_s=NOW,
        deadline_s=DEADLINE,
        resume=resume,
        in_pool=in_pool or {},
        revert_readable=readable,
    )


SENT = RequestState.SENT
MINED = RequestState.MINED
FRESH = NOW - DEADLINE + 1  # sent one second before its deadline


@pytest.mark.parametrize(
    ("head", "status", "readable", "recorded", "verdict"),
    [
        (99, 1, True, None, Verdict.MINED),  # depth 2 of 3
        (99, 1, True, (A, "0xblock"), Verdict.WAITING),  # recorded there already
        (99, 1, True, (A, "0xother"), Verdict.MINED),  # a reorg moved it to another block
        (100, 1, True, None, Verdict.CONFIRMED),  # exactly depth 3
        (100, 0, True, None, Verdict.REVERTED),
        (100, 0, False, (A, "0xblock"), Verdict.WAITING),  # an RPC fault hid the reason
        (96 + 3 + REVERT_REASON_GRACE_BLOCKS, 0, False, None, Verdict.MINED),
        (97 + 3 + REVERT_REASON_GRACE_BLOCKS, 0, False, None, Verdict.REVERTED),
    ],
    ids=[
        "below K",
        "below K, recorded",
        "below K, new block",
        "at K",
        "reverted at K",
        "revert unreadable",
        "unreadable, one block before the grace ends",
        "unreadable, grace over",
    ],
)
def test_a_receipt_is_final_at_depth_k_and_a_revert_only_once_its_reason_is_read(
    head: int, status: int, readable: bool, recorded: tuple[str, str] | None, verdict: Verdict
) -> None:
    receipt = Receipt(A, block=98, block_hash="0xblock", status=status)
    state = MINED if recorded else SENT
    decision = _decide(
        state, [(A, NOW)], receipt=receipt, recorded=recorded, head=head, readable=readable
    )
    assert decision.verdict is verdict
    assert decision.depth == head - 98 + 1
    assert decision.broadcast == ()


def test_a_mined_request_without_a_receipt_was_reorged_and_is_sent_again() -> None:
    decision = _decide(MINED, [(A, NOW), (B, NOW)], recorded=(B, "0xgone"))
    assert decision == Decision(Verdict.REORGED, broadcast=((B, "reorged"),))


def test_an_unsent_first_attempt_is_broadcast_without_asking_the_pool() -> None:
    decision = _decide(SENT, [(A, None)], resume=True)
    assert decision == Decision(Verdict.BROADCAST, broadcast=((A, "unsent"),))


def test_an_unsent_replacement_asks_whether_the_attempt_it_replaces_is_still_in_the_pool() -> None:
    attempts: list[tuple[str, int | None]] = [(A, FRESH), (B, FRESH), (C, None)]
    assert _decide(SENT, attempts) == Decision(Verdict.CHECK_POOL, check_pool=(B,))
    still_there = _decide(SENT, attempts, in_pool={B: True})
    assert still_there == Decision(Verdict.BROADCAST, broadcast=((C, "unsent"),))
    # The node refuses the replacement and lost the previous attempt: both are sent, the
    # previous one first, so the request has something in the pool whatever the node says.
    gone = _decide(SENT, attempts, in_pool={B: False})
    assert gone == Decision(Verdict.BROADCAST, broadcast=((B, "dropped"), (C, "unsent")))


@pytest.mark.parametrize(
    ("sent_at", "resume", "in_pool", "expected"),
    [
        (FRESH, True, {}, Decision(Verdict.BROADCAST, broadcast=((A, "restart"),))),
        (NOW - DEADLINE, False, {}, Decision(Verdict.REPLACE)),
        (NOW - DEADLINE, True, {}, Decision(Verdict.BROADCAST, broadcast=((A, "restart"),))),
        (FRESH, False, {}, Decision(Verdict.CHECK_POOL, check_pool=(A,))),
        (FRESH, False, {A: True}, Decision(Verdict.NOTHING)),
        (FRESH, False, {A: False}, Decision(Verdict.BROADCAST, broadcast=((A, "dropped"),))),
    ],
    ids=[
        "restart",
        "at its deadline",
        "restart before replacing",
        "ask the pool",
        "in the pool",
        "dropped",
    ],
)
def test_a_sent_attempt_is_broadcast_again_replaced_or_left_alone(
    sent_at: int, resume: bool, in_pool: dict[str, bool], expected: Decision
) -> None:
    assert _decide(SENT, [(A, sent_at)], resume=resume, in_pool=in_pool) == expected


def test_advisory_key_is_a_stable_signed_64_bit_number() -> None:
    key = advisory_key("outbox:31337:0xabc")
    assert key == advisory_key("outbox:31337:0xabc") != advisory_key("outbox:1:0xabc")
    assert -(2**63) <= key < 2**63


def test_a_lease_of_a_dead_local_process_may_be_taken_over() -> None:
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _local_holder_is_dead(f"{host}:{dead.pid}:token")
    assert not _local_holder_is_dead(f"{host}:{os.getpid()}:token")  # ourselves
    assert not _local_holder_is_dead(f"{host}:{os.getppid()}:token")  # alive
    assert not _local_holder_is_dead(f"elsewhere.example:{dead.pid}:token")  # cannot tell
    assert not _local_holder_is_dead("garbage")
