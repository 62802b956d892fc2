"""What the parts of the sender share: one round's context, the JSON log lines, the fees.

Every state change writes one JSON log line (logger `granular.outbox`) with the request id,
idempotency key, items, nonce, tier, fees, tx hash, block and state; alerts carry
`"event": "alert"` and the alert's name. Never a secret: the key lives in `TxSigner`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.chain.artifacts import ErrorDecoder
from granular.adapters.chain.client import ChainUnavailable, redact_url
from granular.adapters.chain.rpc import Rpc, TxSigner, hex_int
from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Attempt, Request
from granular.domain.gas import (
    FEE_HISTORY_BLOCK_COUNT,
    Eip1559Fees,
    FeeHistory,
    FeeQuote,
    Fees,
    LegacyFees,
    Tier,
    Wei,
    block_has_base_fee,
    estimate_fees,
    parse_fee_history,
)
from granular.domain.outbox import RequestState
from granular.errors import ConfigurationError, GranularError
from granular.services.outbox_config import OutboxConfig

LOGGER_NAME = "granular.outbox"

# Fault-injection points (tests simulate a crash by raising from the hook).
AFTER_COMMIT_BEFORE_BROADCAST = "after_commit_before_broadcast"
AFTER_BROADCAST_BEFORE_MARK = "after_broadcast_before_mark"


class ChainIdMismatch(ConfigurationError):
    code = "chain_id_mismatch"

    def __init__(self, configured: int, actual: int, url: str) -> None:
        super().__init__(
            f"the outbox is configured for chain id {configured}, but {redact_url(url)} "
            f"is chain id {actual}",
            {"field": "chain_id", "value": configured, "rule": f"equals the RPC's ({actual})"},
        )


class LeaseLost(GranularError):
    """Another sender holds the lease now: this one signs nothing more this round."""

    code = "outbox_lease_lost"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request that reached a final state; `tx_hash` is the transaction the chain kept."""

    request_id: int
    idempotency_key: str
    state: RequestState
    tx_hash: str | None
    block_number: int | None
    error_code: str | None
    error_detail: str | None


@dataclass(frozen=True, slots=True)
class SendReport:
    """What one round did. `more_work`: queued requests are left for the next round.

    leased: False when the round did not hold the lease, from its start or from a signing
    on (another sender took it over): then `finished` lists what became final before.
    """

    leased: bool
    signed: int = 0
    broadcast: int = 0
    replaced: int = 0
    in_flight: int = 0
    more_work: bool = False
    finished: tuple[Outcome, ...] = ()


@dataclass
class SenderStats:
    rounds: int = 0
    broadcasts: int = 0
    signed: int = 0
    replaced: int = 0
    consecutive_failures: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Head:
    number: int
    has_base_fee: bool


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


# --- fees as stored -----------------------------------------------------------------------


def fees_of(attempt: Attempt) -> Fees:
    if attempt.fee_kind == db.FeeKindColumn.LEGACY:
        return LegacyFees(gas_price_wei=Wei(attempt.gas_price_wei or 0))
    return Eip1559Fees(
        max_fee_per_gas_wei=Wei(attempt.max_fee_per_gas_wei or 0),
        max_priority_fee_per_gas_wei=Wei(attempt.max_priority_fee_per_gas_wei or 0),
    )


def fee_fields(fees: Fees) -> dict[str, int | None]:
    if isinstance(fees, LegacyFees):
        return {
            "max_fee_per_gas_wei": None,
            "max_priority_fee_per_gas_wei": None,
            "gas_price_wei": fees.gas_price_wei,
        }
    return {
        "max_fee_per_gas_wei": fees.max_fee_per_gas_wei,
        "max_priority_fee_per_gas_wei": fees.max_priority_fee_per_gas_wei,
        "gas_price_wei": None,
    }


def fee_kind(fees: Fees) -> str:
    return db.FeeKindColumn.LEGACY if isinstance(fees, LegacyFees) else db.FeeKindColumn.EIP1559


# --- logs ---------------------------------------------------------------------------------


class OutboxLog:
    """One JSON line per state change or alert."""

    def __init__(self, logger: logging.Logger, *, chain_id: int, signer: str) -> None:
        self._log = logger
        self._chain_id = chain_id
        self._signer = signer

    def _fields(self, request: Request | None, attempt: Attempt | None) -> dict[str, Any]:
        record: dict[str, Any] = {"chain_id": self._chain_id, "signer": self._signer}
        if request is not None:
            record.update(
                request_id=request.id,
                idempotency_key=request.idempotency_key,
                items=request.items,
                nonce=request.nonce,
                tier=request.tier,
                tx_hash=request.tx_hash,
                block=request.block_number,
            )
        if attempt is not None:
            record.update(
                nonce=attempt.nonce,
                tx_hash=attempt.tx_hash,
                fee_kind=attempt.fee_kind,
                max_fee_per_gas_wei=attempt.max_fee_per_gas_wei,
                max_priority_fee_per_gas_wei=attempt.max_priority_fee_per_gas_wei,
                gas_price_wei=attempt.gas_price_wei,
                gas_limit=attempt.gas_limit,
            )
        return record

    def event(
        self,
        event: str,
        request: Request,
        attempt: Attempt | None,
        state: RequestState,
        **extra: Any,
    ) -> None:
        record = {"event": event, **self._fields(request, attempt), "state": state.value, **extra}
        level = logging.WARNING if event in ("reorged", "reverted", "failed") else logging.INFO
        self._log.log(level, json.dumps(record, default=str))

    def alert(
        self,
        alert: str,
        *,
        level: int,
        request: Request | None = None,
        attempt: Attempt | None = None,
        **extra: Any,
    ) -> None:
        record: dict[str, Any] = {
            "event": "alert",
            "alert": alert,
            **self._fields(request, attempt),
        }
        if request is not None:
            record["state"] = request.state.value
        record.update(extra)
        self._log.log(level, json.dumps(record, default=str))


# --- the context of the parts -------------------------------------------------------------


@dataclass
class SenderContext:
    """What the broadcaster, confirmer and resender of one sender share.

    `still_leased` renews the lease and says whether this sender still holds it; every
    part that signs calls `require_lease` first.
    """

    config: OutboxConfig
    signer: TxSigner
    rpc: Rpc
    sessions: sessionmaker[Session]
    decoder: ErrorDecoder
    clock: Callable[[], float]
    fault: Callable[[str], None] | None
    log: OutboxLog
    still_leased: Callable[[], bool]
    stats: SenderStats = field(default_factory=SenderStats)
    _quotes: dict[Tier, FeeQuote] = field(default_factory=dict)
    _fee_history: FeeHistory | None = None

    @property
    def chain_id(self) -> int:
        return self.config.chain_id

    @property
    def address(self) -> str:
        return self.signer.address

    def now(self) -> datetime:
        return utc(self.clock())

    def reached(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point)

    def require_lease(self) -> None:
        """Raise LeaseLost unless this sender still holds its lease (renewing it)."""
        if not self.still_leased():
            self.log.alert("lease_lost", level=logging.WARNING, detail="not signing")
            raise LeaseLost(f"outbox lease of {self.address} on chain {self.chain_id} lost")

    def new_round(self) -> None:
        self._quotes = {}
        self._fee_history = None

    def head(self) -> Head:
        block = self.rpc.call("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, Mapping):
            raise ChainUnavailable(self.rpc.url, "no latest block")
        return Head(number=hex_int(block["number"]), has_base_fee=block_has_base_fee(block))

    def quote(self, tier: Tier, head: Head) -> FeeQuote:
        """This round's fees for a first attempt of `tier` (fetched once per round)."""
        quote = self._quotes.get(tier)
        if quote is not None:
            return quote
        policy = self.config.fee_policy
        if head.has_base_fee:
            if self._fee_history is None:
                raw = self.rpc.call(
                    "eth_feeHistory",
                    [hex(FEE_HISTORY_BLOCK_COUNT), "latest", list(policy.reward_percentiles)],
                )
                self._fee_history = parse_fee_history(
                    raw, reward_percentiles=policy.reward_percentiles
                )
            quote = estimate_fees(
                latest_block_has_base_fee=True,
                tier=tier,
                policy=policy,
                fee_history=self._fee_history,
            )
        else:
            gas_price = Wei(self.rpc.int_call("eth_gasPrice", []))
            quote = estimate_fees(
                latest_block_has_base_fee=False, tier=tier, policy=policy, gas_price_wei=gas_price
            )
        if quote.capped:
            self.log.alert(
                "fee_cap_reached",
                level=logging.WARNING,
                tier=tier.value,
                fee_cap_wei=policy.fee_cap_wei,
                uncapped=fee_fields(quote.uncapped),
                capped=fee_fields(quote.fees),
            )
        self._quotes[tier] = quote
        return quote
