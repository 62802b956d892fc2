"""The outbox's pure parts: what a node's refusal means, depth, settings, revert data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from granular.adapters.chain.outbox import (
    BroadcastResult,
    OutboxConfig,
    OutboxConfigInvalid,
    RpcError,
    backoff_s,
    classify_broadcast_error,
    confirmation_depth,
    counts_as_sent,
    is_final,
)
from granular.adapters.db.lease import _local_holder_is_dead, advisory_key
from granular.domain.gas import Tier


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


def test_depth_counts_the_block_itself_and_k_is_reached_exactly() -> None:
    assert confirmation_depth(head_block=10, mined_block=10) == 1
    assert not is_final(head_block=11, mined_block=10, confirmations=3)  # depth 2
    assert is_final(head_block=12, mined_block=10, confirmations=3)  # depth 3
    assert is_final(head_block=10, mined_block=10, confirmations=0)


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


def test_config_reads_the_granular_settings_per_chain() -> None:
    env = {
        "GRANULAR_CONFIRMATIONS": "2",
        "GRANULAR_CONFIRMATIONS_BY_CHAIN": "246=20, 73799=5",
        "GRANULAR_FEE_CAP_WEI": "100000000000",
        "GRANULAR_TIER_DEADLINES_S": "fast=10,standard=60,slow=600",
        "GRANULAR_OUTBOX_POLL_INTERVAL_S": "0.5",
    }
    ewc = OutboxConfig.from_env(env, chain_id=246)
    anvil = OutboxConfig.from_env(env, chain_id=31337)
    assert ewc.confirmations == 20 and anvil.confirmations == 2
    assert ewc.fee_policy.fee_cap_wei == 100_000_000_000
    assert ewc.fee_policy.for_tier(Tier.FAST).deadline_s == 10
    assert ewc.fee_policy.for_tier(Tier.SLOW).deadline_s == 600
    assert ewc.poll_interval_s == 0.5
    default = OutboxConfig.from_env({}, chain_id=1)
    assert default.confirmations == 1 and default.fee_policy.fee_cap_wei is None


@pytest.mark.parametrize(
    "env",
    [
        {"GRANULAR_CONFIRMATIONS": "-1"},
        {"GRANULAR_CONFIRMATIONS": "many"},
        {"GRANULAR_TIER_DEADLINES_S": "urgent=5"},
        {"GRANULAR_OUTBOX_POLL_INTERVAL_S": "0"},
    ],
    ids=["negative K", "K not a number", "unknown tier", "zero poll interval"],
)
def test_config_refuses_bad_settings(env: dict[str, str]) -> None:
    with pytest.raises(OutboxConfigInvalid) as raised:
        OutboxConfig.from_env(env, chain_id=1)
    assert raised.value.code == "outbox_config_invalid"


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
