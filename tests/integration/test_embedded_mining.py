"""The embedded anvil (`granular run` without GRANULAR_RPC_URL) mines what did not fit a
block without waiting for another transaction: automine alone mines one block when
transactions arrive and leaves the rest pending until something else is sent, which for the
outbox is the fast tier's replacement 30 s later."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from granular.adapters.chain.anvil import EMBEDDED_BLOCK_TIME_S, persistent_anvil
from granular.adapters.chain.keys import anvil_account
from granular.adapters.chain.rpc import Rpc, RpcError, hex_int

TRANSFER_GAS = 21_000
# Two plain transfers do not fit in one block together: the second needs a later block.
BLOCK_GAS_LIMIT = 30_000


def _receipts(rpc: Rpc, hashes: list[str]) -> list[Any]:
    return rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])


def test_two_transactions_over_the_block_gas_limit_are_both_mined_without_another(
    tmp_path: Path,
) -> None:
    anvil = persistent_anvil(tmp_path)  # the embedded launcher, with its mining arguments
    anvil.args = (*anvil.args, "--gas-limit", str(BLOCK_GAS_LIMIT))
    with anvil:
        rpc = Rpc(anvil.url, timeout_s=10)
        sender = anvil_account(0)
        latest = rpc.call("eth_getBlockByNumber", ["latest", False])
        max_fee_wei = 2 * hex_int(latest["baseFeePerGas"]) + 1
        raws = [
            "0x"
            + bytes(
                sender.sign_transaction(
                    {
                        "type": 2,
                        "chainId": 31337,
                        "nonce": nonce,
                        "to": anvil_account(1).address,
                        "value": 1,
                        "gas": TRANSFER_GAS,
                        "maxFeePerGas": max_fee_wei,
                        "maxPriorityFeePerGas": 1,
                    }
                ).raw_transaction
            ).hex()
            for nonce in (0, 1)
        ]
        # One JSON-RPC batch, as the outbox broadcasts: both are in the pool when automine
        # mines, and only the first fits.
        hashes = rpc.batch([("eth_sendRawTransaction", [raw]) for raw in raws])
        assert not any(isinstance(h, RpcError) for h in hashes), hashes

        # Nothing else is sent from here on. The wait is a deadline for the second block,
        # not a timing assertion: three interval blocks and some slack.
        deadline = time.monotonic() + 3 * EMBEDDED_BLOCK_TIME_S + 10
        receipts = _receipts(rpc, hashes)
        while not all(receipts) and time.monotonic() < deadline:
            time.sleep(0.2)
            receipts = _receipts(rpc, hashes)
        assert all(receipts), "a transaction that did not fit its block stayed pending"

        first, second = (hex_int(r["blockNumber"]) for r in receipts)
        assert first < second <= first + 3  # within a few blocks of each other
        assert all(hex_int(r["status"]) == 1 for r in receipts)
        # Mined as sent: the nonces were used once each, no replacement was signed.
        assert rpc.int_call("eth_getTransactionCount", [sender.address, "latest"]) == 2
