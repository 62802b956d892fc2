"""Small helpers for tests that talk to the registry on anvil."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from granular.adapters.chain.artifacts import DecodedError, ErrorDecoder


@dataclass
class Reverted:
    error: DecodedError | None = field(default=None)


@dataclass
class Chain:
    w3: Web3
    registry: Contract
    forwarder: Contract
    decoder: ErrorDecoder

    def send(self, call: Any, sender: str) -> Any:
        """Transact `call` from an unlocked anvil account; return the successful receipt."""
        tx_hash = call.transact({"from": sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, receipt
        return receipt

    def events(self, receipt: Any, name: str) -> list[Any]:
        """The receipt's `name` events; logs of other events are skipped quietly."""
        event = getattr(self.registry.events, name)()
        return list(event.process_receipt(receipt, errors=DISCARD))

    @contextmanager
    def reverts(self, name: str, *args: Any) -> Iterator[Reverted]:
        """Expect the custom error `name` (with `args`, when given) from the block's call."""
        outcome = Reverted()
        try:
            yield outcome
        except ContractCustomError as error:
            data = error.data if isinstance(error.data, str) else str(error.args[0])
            outcome.error = self.decoder.decode(data)
        else:
            raise AssertionError(f"expected revert {name}, but the call succeeded")
        assert outcome.error is not None, "reverted without a known custom error"
        assert outcome.error.name == name, f"expected {name}, got {outcome.error}"
        if args:
            expected = tuple(normalise(v) for v in args)
            assert outcome.error.args == expected, f"expected {name}{args}, got {outcome.error}"


def normalise(value: Any) -> Any:
    """Addresses compare in checksum form, whatever case the test wrote them in."""
    if isinstance(value, str) and Web3.is_address(value):
        return Web3.to_checksum_address(value)
    return value
