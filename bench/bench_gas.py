"""Gas of the registry's commands on anvil (issues 2 and 8): per certificate in issueBatch, per
holder command, and per entry of the bulk commands (the transaction's gasUsed, 21,000 base
included, divided by the entries). Targets: <= 30,000 gas per certificate at batch 100;
<= 45,000 for a claim of two equal slices; claimBatch(100) <= 20,000 per claim;
transferBatch(100) of whole slices to one wallet <= 15,000 per transfer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from web3 import Web3

from granular.adapters.chain.anvil import Anvil
from granular.adapters.chain.artifacts import Artifact
from granular.adapters.chain.client import connect
from granular.adapters.chain.keys import anvil_account
from granular.services.deployment import deploy

TX_GAS_CAP = 16_777_216  # EIP-7825 per-transaction cap
PRODUCTION, CONSUMPTION = 0, 1
BULK = 100  # entries per bulk command


def _items(owner: str, count: int, kind: int = PRODUCTION, quantity: int = 1_234_567) -> list[Any]:
    return [(owner, kind, quantity, os.urandom(32)) for _ in range(count)]


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, Anvil(args=("--gas-limit", "60000000")) as node:
        record = deploy(rpc_url=node.url, network="bench", directory=Path(tmp))
        w3, _ = connect(node.url)
        registry = w3.eth.contract(
            address=record["address"], abi=Artifact.load("CertificateRegistry").abi
        )
        return _measure(w3, registry)


def _measure(w3: Web3, registry: Any) -> dict[str, Any]:
    issuer = anvil_account(0).address
    holder = anvil_account(1).address
    other = anvil_account(2).address
    functions = registry.functions

    def gas_of(call: Any, sender: str) -> int:
        receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": sender}))
        assert receipt["status"] == 1
        return int(receipt["gasUsed"])

    def issue(items: list[Any]) -> tuple[int, int]:
        first = functions.nextId().call()
        return first, gas_of(functions.issueBatch(os.urandom(32), items), issuer)

    per_certificate: dict[str, float] = {}
    for size in (1, 10, 100):
        _, gas = issue(_items(holder, size))
        per_certificate[str(size)] = round(gas / size)

    low, high = 100, 2000
    while low < high:  # the largest batch whose issueBatch fits under the cap
        mid = (low + high + 1) // 2
        estimate = functions.issueBatch(os.urandom(32), _items(holder, mid)).estimate_gas(
            {"from": issuer}
        )
        low, high = (mid, high) if estimate <= TX_GAS_CAP else (low, mid - 1)
    _, gas = issue(_items(holder, low))
    per_certificate[f"{low} (largest under {TX_GAS_CAP})"] = round(gas / low)

    first, _ = issue(
        _items(holder, 6) + _items(holder, 4, kind=CONSUMPTION)
    )  # ids first..first+5 production, first+6.. consumption, all 1,234,567 Wh
    p = list(range(first, first + 6))
    c = list(range(first + 6, first + 10))
    commands = {
        "transfer": gas_of(functions.transfer(p[0], other), holder),
        "transferPart": gas_of(functions.transferPart(p[1], 1000, other), holder),
        # one part and the remainder: two children, both kept by the holder
        "split into 2": gas_of(functions.split(p[2], [(1000, "0x" + "0" * 40)]), holder),
        "claim (two equal slices)": gas_of(functions.claim(p[3], c[0]), holder),
        "claimPart": gas_of(functions.claimPart(p[4], c[1], 1000), holder),
        "withdraw": gas_of(functions.withdraw(p[5]), issuer),
    }
    bulk = _measure_bulk(issue, gas_of, functions, holder, other)
    claim_batch = bulk["claimBatch(100), whole equal slices"]
    transfer_batch = bulk["transferBatch(100), whole slices to one wallet"]
    return {
        "gas_per_certificate_by_batch_size": per_certificate,
        "gas_per_command": commands,
        "gas_per_entry_of_bulk_commands": bulk,
        "targets": {
            "per_certificate_at_100": {"limit": 30_000, "met": per_certificate["100"] <= 30_000},
            "claim_two_equal_slices": {
                "limit": 45_000,
                "met": commands["claim (two equal slices)"] <= 45_000,
            },
            "claim_batch_per_claim_at_100": {"limit": 20_000, "met": claim_batch <= 20_000},
            "transfer_batch_per_transfer_at_100": {
                "limit": 15_000,
                "met": transfer_batch <= 15_000,
            },
        },
    }


def _measure_bulk(
    issue: Any, gas_of: Any, functions: Any, holder: str, other: str
) -> dict[str, int]:
    """Per entry, rounded: the goals' two cases, then the costlier shapes for comparison."""
    figures: dict[str, int] = {}

    def per_entry(name: str, call: Any) -> None:
        figures[name] = round(gas_of(call, holder) / BULK)

    def production_and_consumption(quantity: int) -> tuple[list[int], list[int]]:
        first, _ = issue(
            _items(holder, BULK, quantity=quantity)
            + _items(holder, BULK, kind=CONSUMPTION, quantity=quantity)
        )
        return list(range(first, first + BULK)), list(range(first + BULK, first + 2 * BULK))

    p, c = production_and_consumption(1_234_567)
    per_entry(
        "claimBatch(100), whole equal slices",
        functions.claimBatch([(pi, ci, 0) for pi, ci in zip(p, c, strict=True)]),
    )
    p, c = production_and_consumption(1_234_567)
    per_entry(
        "claimBatch(100), 1,000 Wh of each side (both split)",
        functions.claimBatch([(pi, ci, 1000) for pi, ci in zip(p, c, strict=True)]),
    )
    # An advanced claim: one consumption slice against 100 whole production slices, each
    # later entry naming the consumption remainder as slice 0.
    first, _ = issue(
        _items(holder, BULK, quantity=1_000)
        + _items(holder, 1, kind=CONSUMPTION, quantity=1_000 * BULK)
    )
    target = first + BULK
    per_entry(
        "claimBatch(100), one consumption slice against 100 production slices (advanced claim)",
        functions.claimBatch([(first + i, target if i == 0 else 0, 1000) for i in range(BULK)]),
    )
    first, _ = issue(_items(holder, BULK))
    ids = range(first, first + BULK)
    per_entry(
        "transferBatch(100), whole slices to one wallet",
        functions.transferBatch([(i, 0, other) for i in ids]),
    )
    first, _ = issue(_items(holder, BULK))
    receivers = [anvil_account(3 + n % 5).address for n in range(BULK)]
    per_entry(
        "transferBatch(100), whole slices to 5 wallets in turn",
        functions.transferBatch(
            [(i, 0, to) for i, to in zip(range(first, first + BULK), receivers, strict=True)]
        ),
    )
    first, _ = issue(_items(holder, BULK))
    per_entry(
        "transferBatch(100), 1,000 Wh of each slice to one wallet",
        functions.transferBatch([(i, 1000, other) for i in range(first, first + BULK)]),
    )
    return figures
