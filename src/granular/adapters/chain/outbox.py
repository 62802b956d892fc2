"""The outbox sender: the one way a transaction reaches the chain (DESIGN.md §6).

One sender per (chain, signing key), guarded by a lease. Each round (`send_once`):

1. reconcile what is in flight: receipts polled; a request is confirmed (or reverted, with
   its custom error decoded) at depth K; a receipt that disappeared (reorg) sends the
   request back to `sent` and its stored attempt is re-broadcast; an attempt the node
   forgot (dropped) is re-broadcast; an attempt older than its tier's deadline is replaced
   with the same nonce and payload and both fee fields raised >= 12.5 % (`domain.gas.bump`),
   never above the fee cap; our nonce used by a transaction that is not ours stops the
   sender (`NonceTakenByForeignTransaction`);
2. sign queued requests: gas estimated, nonces allocated gapless as
   max(stored next nonce, pending count on chain), signed locally, stored and committed,
   THEN broadcast. "already known" / "nonce too low" after our broadcast count as sent.
   A request whose estimate reverts fails without a nonce; one whose estimate fails for
   another reason (a node's gas allowance, an RPC fault, a call that needs an earlier
   request mined) stays queued, skipped until a backoff that doubles per failure has
   passed, so the requests behind it are signed meanwhile.

A restarted sender re-broadcasts every stored attempt still in flight. A payload is never
signed for a nonce another payload owns (unique nonce per request in the database).
Every state change writes one JSON log line (logger `granular.outbox`), never a secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.datatypes import PrivateKey
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from granular.adapters.chain.artifacts import Artifact, ErrorDecoder
from granular.adapters.chain.client import ChainUnavailable, redact_url
from granular.adapters.db import outbox as db
from granular.adapters.db.engine import session_factory
from granular.adapters.db.lease import Lease, make_lease
from granular.adapters.db.outbox import Attempt, Request, RequestState
from granular.domain.gas import (
    FEE_HISTORY_BLOCK_COUNT,
    Eip1559Fees,
    FeeHistory,
    FeePolicy,
    FeeQuote,
    Fees,
    LegacyFees,
    Tier,
    TierPolicy,
    Wei,
    block_has_base_fee,
    bump,
    estimate_fees,
    is_due_for_replacement,
    parse_fee_history,
)
from granular.errors import ConfigurationError, GranularError

LOGGER_NAME = "granular.outbox"
BP_ONE = 10_000
_BATCH_CHUNK = 200  # JSON-RPC calls per HTTP batch

# Fault-injection points (tests simulate a crash by raising from the hook).
AFTER_COMMIT_BEFORE_BROADCAST = "after_commit_before_broadcast"
AFTER_BROADCAST_BEFORE_MARK = "after_broadcast_before_mark"


# --- errors -------------------------------------------------------------------------------


class OutboxError(GranularError):
    code = "outbox_error"


class NonceTakenByForeignTransaction(OutboxError):
    """A transaction that is not one of ours was mined with a nonce we had signed for.

    The sender stops: issuing again could mint twice. An operator must look at the key.
    """

    code = "nonce_taken_by_foreign_transaction"

    def __init__(self, chain_id: int, signer: str, nonce: int, request_id: int, key: str) -> None:
        self.chain_id = chain_id
        self.signer = signer
        self.nonce = nonce
        self.request_id = request_id
        self.idempotency_key = key
        super().__init__(
            f"chain {chain_id}: nonce {nonce} of {signer} was used by a transaction that is not "
            f"the outbox's (request {request_id}, key {key!r}); the sender stopped, check who "
            "else signs with this key"
        )


class ChainIdMismatch(ConfigurationError):
    code = "chain_id_mismatch"

    def __init__(self, configured: int, actual: int, url: str) -> None:
        super().__init__(
            f"the outbox is configured for chain id {configured}, but {redact_url(url)} "
            f"is chain id {actual}"
        )


class OutboxConfigInvalid(ConfigurationError):
    code = "outbox_config_invalid"

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        super().__init__(f"outbox {field}={value!r} breaks the rule: {rule}")


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """Settings of one sender (one chain). Durations in seconds; fees in `fee_policy`.

    confirmations: depth K at which a mined request is final (0: as soon as mined).
    batch_size: queued requests signed per round.
    gas_limit_margin_bp: gas limit = estimate x this / 10 000.
    lease_ttl_s: how long a lease row stays valid without renewal (SQLite).
    """

    chain_id: int
    confirmations: int = 1
    poll_interval_s: float = 1.0
    fee_policy: FeePolicy = field(default_factory=FeePolicy)
    batch_size: int = 100
    gas_limit_margin_bp: int = 12_000
    lease_ttl_s: float = 60.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    rpc_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, object, str]] = [
            (self.chain_id >= 1, "chain_id", self.chain_id, ">= 1"),
            (self.confirmations >= 0, "confirmations", self.confirmations, ">= 0"),
            (self.poll_interval_s > 0, "poll_interval_s", self.poll_interval_s, "> 0"),
            (self.batch_size >= 1, "batch_size", self.batch_size, ">= 1"),
            (
                self.gas_limit_margin_bp >= BP_ONE,
                "gas_limit_margin_bp",
                self.gas_limit_margin_bp,
                f">= {BP_ONE} (never below the estimate)",
            ),
            (self.lease_ttl_s > 0, "lease_ttl_s", self.lease_ttl_s, "> 0"),
            (self.backoff_initial_s > 0, "backoff_initial_s", self.backoff_initial_s, "> 0"),
            (
                self.backoff_max_s >= self.backoff_initial_s,
                "backoff_max_s",
                self.backoff_max_s,
                ">= backoff_initial_s",
            ),
            (self.rpc_timeout_s > 0, "rpc_timeout_s", self.rpc_timeout_s, "> 0"),
        ]
        for ok, name, value, rule in checks:
            if not ok:
                raise OutboxConfigInvalid(name, value, rule)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, chain_id: int) -> OutboxConfig:
        """Read the GRANULAR_* outbox settings (see the module's ENV_SETTINGS)."""
        confirmations = _per_chain(
            environ, "GRANULAR_CONFIRMATIONS", "GRANULAR_CONFIRMATIONS_BY_CHAIN", chain_id
        )
        cap = _per_chain(environ, "GRANULAR_FEE_CAP_WEI", "GRANULAR_FEE_CAP_WEI_BY_CHAIN", chain_id)
        deadlines = _deadlines(environ.get("GRANULAR_TIER_DEADLINES_S", ""))
        default = FeePolicy()
        floor = environ.get("GRANULAR_PRIORITY_FEE_FLOOR_WEI")
        policy = FeePolicy(
            slow=_with_deadline(default.slow, deadlines.get(Tier.SLOW)),
            standard=_with_deadline(default.standard, deadlines.get(Tier.STANDARD)),
            fast=_with_deadline(default.fast, deadlines.get(Tier.FAST)),
            priority_fee_floor_wei=Wei(_int("GRANULAR_PRIORITY_FEE_FLOOR_WEI", floor))
            if floor
            else default.priority_fee_floor_wei,
            fee_cap_wei=Wei(cap) if cap is not None else None,
        )
        return cls(
            chain_id=chain_id,
            confirmations=1 if confirmations is None else confirmations,
            poll_interval_s=_float(environ, "GRANULAR_OUTBOX_POLL_INTERVAL_S", 1.0),
            fee_policy=policy,
            batch_size=int(_float(environ, "GRANULAR_OUTBOX_BATCH_SIZE", 100)),
            lease_ttl_s=_float(environ, "GRANULAR_OUTBOX_LEASE_TTL_S", 60.0),
            backoff_max_s=_float(environ, "GRANULAR_OUTBOX_BACKOFF_MAX_S", 30.0),
        )


ENV_SETTINGS: tuple[str, ...] = (
    "GRANULAR_CONFIRMATIONS",
    "GRANULAR_CONFIRMATIONS_BY_CHAIN",
    "GRANULAR_FEE_CAP_WEI",
    "GRANULAR_FEE_CAP_WEI_BY_CHAIN",
    "GRANULAR_TIER_DEADLINES_S",
    "GRANULAR_PRIORITY_FEE_FLOOR_WEI",
    "GRANULAR_OUTBOX_POLL_INTERVAL_S",
    "GRANULAR_OUTBOX_BATCH_SIZE",
    "GRANULAR_OUTBOX_LEASE_TTL_S",
    "GRANULAR_OUTBOX_BACKOFF_MAX_S",
)


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise OutboxConfigInvalid(name, raw, "an integer") from None


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise OutboxConfigInvalid(name, raw, "a number") from None


def _pairs(name: str, raw: str) -> dict[str, str]:
    """`a=1,b=2` (also `a:1`) into a dict; blanks ignored."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        sep = "=" if "=" in part else ":"
        key, _, value = part.partition(sep)
        if not value.strip():
            raise OutboxConfigInvalid(name, raw, "comma-separated key=value pairs")
        out[key.strip().lower()] = value.strip()
    return out


def _per_chain(
    environ: Mapping[str, str], name: str, by_chain_name: str, chain_id: int
) -> int | None:
    by_chain = _pairs(by_chain_name, environ.get(by_chain_name, ""))
    if str(chain_id) in by_chain:
        return _int(by_chain_name, by_chain[str(chain_id)])
    raw = environ.get(name)
    return _int(name, raw) if raw is not None and raw.strip() else None


def _deadlines(raw: str) -> dict[Tier, int]:
    out: dict[Tier, int] = {}
    for key, value in _pairs("GRANULAR_TIER_DEADLINES_S", raw).items():
        try:
            tier = Tier(key)
        except ValueError:
            raise OutboxConfigInvalid(
                "GRANULAR_TIER_DEADLINES_S", raw, "tiers are fast, standard, slow"
            ) from None
        out[tier] = _int("GRANULAR_TIER_DEADLINES_S", value)
    return out


def _with_deadline(policy: TierPolicy, deadline_s: int | None) -> TierPolicy:
    if deadline_s is None:
        return policy
    return TierPolicy(
        deadline_s=deadline_s,
        reward_percentile=policy.reward_percentile,
        base_fee_headroom_bp=policy.base_fee_headroom_bp,
        legacy_multiplier_bp=policy.legacy_multiplier_bp,
    )


# --- JSON-RPC -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error answer (the node answered, and said no)."""

    method: str
    code: int
    message: str
    data: Any = None

    def revert_data(self) -> bytes | None:
        """The revert bytes a node put in `data` (a hex string, or inside a message)."""
        raw = self.data
        if isinstance(raw, dict):
            raw = raw.get("data")
        if not isinstance(raw, str):
            return None
        start = raw.find("0x")
        if start < 0:
            return None
        hex_part = raw[start + 2 :].split()[0] if raw[start + 2 :] else ""
        try:
            return bytes.fromhex(hex_part)
        except ValueError:
            return None

    @property
    def is_revert(self) -> bool:
        """geth and anvil say so in the code or message; OpenEthereum only in `data`
        ("VM execution error." with data "Reverted 0x...")."""
        return (
            self.code == 3 or "revert" in self.message.lower() or "revert" in str(self.data).lower()
        )


Answer = Any  # a JSON-RPC result, or an RpcError


class Rpc:
    """Raw JSON-RPC over HTTP: hex in, hex out, no retries (the sender backs off itself)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self._provider = HTTPProvider(
            url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
        )

    def _transport(self, send: Callable[[], Any]) -> Any:
        try:
            return send()
        except (requests.RequestException, OSError, ValueError) as error:
            raise ChainUnavailable(self.url, type(error).__name__) from None

    def answer(self, method: str, params: Sequence[Any]) -> Answer:
        response = self._transport(
            lambda: self._provider.make_request(RPCEndpoint(method), list(params))
        )
        return _unwrap(method, response)

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """The result; a JSON-RPC error here means the node cannot serve us: unavailable."""
        result = self.answer(method, params)
        if isinstance(result, RpcError):
            raise ChainUnavailable(self.url, f"{method}: {result.message}")
        return result

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Answer]:
        """One answer per call, in order; a node without batch support is asked one by one."""
        answers: list[Answer] = []
        for start in range(0, len(calls), _BATCH_CHUNK):
            chunk = calls[start : start + _BATCH_CHUNK]
            encoded = [(RPCEndpoint(m), list(p)) for m, p in chunk]

            def send(encoded: list[tuple[RPCEndpoint, list[Any]]] = encoded) -> Any:
                return self._provider.make_batch_request(encoded)

            response = self._transport(send)
            if isinstance(response, list) and len(response) == len(chunk):
                answers.extend(
                    _unwrap(method, one) for (method, _), one in zip(chunk, response, strict=True)
                )
            else:
                answers.extend(self.answer(method, params) for method, params in chunk)
        return answers


def _unwrap(method: str, response: Mapping[str, Any]) -> Answer:
    error = response.get("error")
    if error is not None:
        if isinstance(error, Mapping):
            return RpcError(
                method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
            )
        return RpcError(method, 0, str(error))
    return response.get("result")


def _hex_int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


# --- broadcast errors ---------------------------------------------------------------------


class BroadcastResult(StrEnum):
    ACCEPTED = "accepted"
    KNOWN = "known"  # the node has this very transaction already
    NONCE_USED = "nonce_used"  # a transaction with this nonce is mined: ours, or foreign
    # The fee is too low: another transaction with this nonce pays more, or the fee is under
    # the pool's minimum or the base fee. Counted as sent so that the tier's deadline runs
    # and the attempt is replaced with higher fees; refused, it would wait forever.
    UNDERPRICED = "underpriced"
    REJECTED = "rejected"  # anything else: funds, gas, malformed; kept, retried, alerted


_KNOWN = ("already known", "already imported", "alreadyknown", "known transaction")
_NONCE_USED = ("nonce too low", "nonce is too low", "oldnonce", "nonce has already been used")
_UNDERPRICED = (
    "underpriced",
    "too low to replace",
    "fee too low",
    "feetoolow",  # Nethermind: FeeTooLow, FeeTooLowToCompete
    "less than block base fee",  # anvil, reth: max fee per gas less than block base fee
    "gas price is too low",  # OpenEthereum: below the node's minimal gas price
)


def classify_broadcast_error(message: str) -> BroadcastResult:
    """What a node's refusal of eth_sendRawTransaction means for the outbox.

    Messages of geth, Nethermind, OpenEthereum (Energy Web Chain), Erigon and anvil.
    """
    text = message.lower()
    if any(s in text for s in _KNOWN) or "same hash was already" in text:
        return BroadcastResult.KNOWN
    if any(s in text for s in _NONCE_USED):
        return BroadcastResult.NONCE_USED
    if any(s in text for s in _UNDERPRICED):
        return BroadcastResult.UNDERPRICED
    return BroadcastResult.REJECTED


def counts_as_sent(result: BroadcastResult) -> bool:
    return result is not BroadcastResult.REJECTED


def confirmation_depth(*, head_block: int, mined_block: int) -> int:
    """1 when the transaction is in the head block, 2 one block later, ..."""
    return head_block - mined_block + 1


def is_final(*, head_block: int, mined_block: int, confirmations: int) -> bool:
    return confirmation_depth(head_block=head_block, mined_block=mined_block) >= confirmations


def backoff_s(*, failures: int, initial_s: float, max_s: float) -> float:
    """The pause after the `failures`-th failure in a row: initial_s, doubling, at most max_s."""
    exponent = min(max(failures - 1, 0), 64)  # 2.0 ** 1024 would overflow; max_s caps it anyway
    return min(max_s, initial_s * 2.0**exponent)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


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
    """What one round did. `more_work`: queued requests are left for the next round."""

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
class _Event:
    """A state change to log once it is committed."""

    name: str
    request: Request
    attempt: Attempt | None
    state: RequestState
    extra: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Head:
    number: int
    has_base_fee: bool


def default_decoder() -> ErrorDecoder:
    """Custom errors of the registry and the forwarder, from the committed artifacts."""
    return ErrorDecoder(
        Artifact.load("CertificateRegistry").abi + Artifact.load("GranularForwarder").abi
    )


def fees_of(attempt: Attempt) -> Fees:
    if attempt.fee_kind == db.FeeKindColumn.LEGACY:
        return LegacyFees(gas_price_wei=Wei(attempt.gas_price_wei or 0))
    return Eip1559Fees(
        max_fee_per_gas_wei=Wei(attempt.max_fee_per_gas_wei or 0),
        max_priority_fee_per_gas_wei=Wei(attempt.max_priority_fee_per_gas_wei or 0),
    )


def _fee_fields(fees: Fees) -> dict[str, int | None]:
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


def _fee_kind(fees: Fees) -> str:
    return db.FeeKindColumn.LEGACY if isinstance(fees, LegacyFees) else db.FeeKindColumn.EIP1559


class OutboxSender:
    """Sends the outbox of one signing key on one chain. Not thread-safe: one per process."""

    def __init__(
        self,
        *,
        engine: Engine,
        rpc_url: str,
        account: LocalAccount,
        config: OutboxConfig,
        decoder: ErrorDecoder | None = None,
        clock: Callable[[], float] = time.time,
        fault: Callable[[str], None] | None = None,
        lease: Lease | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.signer: str = Web3.to_checksum_address(account.address)
        self.chain_id = config.chain_id
        self.stats = SenderStats()
        self._key = PrivateKey(bytes(account.key))
        self._sessions = session_factory(engine)
        self._rpc = Rpc(rpc_url, timeout_s=config.rpc_timeout_s)
        self._decoder = decoder if decoder is not None else default_decoder()
        self._clock = clock
        self._fault = fault
        self._log = logger or logging.getLogger(LOGGER_NAME)
        self.lease = lease or make_lease(
            engine,
            f"outbox:{config.chain_id}:{self.signer}",
            ttl_s=config.lease_ttl_s,
            clock=clock,
        )
        self._chain_checked = False
        self._resumed = False  # the first round re-broadcasts everything in flight
        self._quotes: dict[Tier, FeeQuote] = {}
        self._fee_history: FeeHistory | None = None

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Rounds until `stop` is set; backs off while the RPC or the database is down.

        Nothing is marked failed while unavailable. NonceTakenByForeignTransaction and
        configuration errors end the loop (and propagate). The lease is released on exit.
        """
        try:
            while not stop.is_set():
                try:
                    report = self.send_once()
                except (ChainUnavailable, OperationalError, InterfaceError) as error:
                    delay = self._failed(error)
                    stop.wait(delay)
                    continue
                if not report.more_work:
                    stop.wait(self.config.poll_interval_s)
        finally:
            self.close()

    def _failed(self, error: Exception) -> float:
        self.stats.failures += 1
        self.stats.consecutive_failures += 1
        n = self.stats.consecutive_failures
        delay = backoff_s(
            failures=n, initial_s=self.config.backoff_initial_s, max_s=self.config.backoff_max_s
        )
        what = "rpc_unavailable" if isinstance(error, ChainUnavailable) else "database_unavailable"
        self._alert(
            what,
            level=logging.WARNING,
            reason=str(error) if isinstance(error, ChainUnavailable) else type(error).__name__,
            consecutive_failures=n,
            retry_in_s=round(delay, 3),
        )
        self._resumed = False  # after an outage, re-broadcast everything in flight
        return delay

    def close(self) -> None:
        """Release the lease (a clean stop)."""
        with contextlib.suppress(DBAPIError):  # gone: the lease expires or dies with it
            self.lease.release()

    # --- one round ----------------------------------------------------------------------

    def send_once(self) -> SendReport:
        """One round: reconcile in-flight requests, then sign and send queued ones."""
        if not self.lease.acquire():
            return SendReport(leased=False)
        self.stats.rounds += 1
        self._quotes = {}
        self._fee_history = None
        if not self._chain_checked:
            actual = _hex_int(self._rpc.call("eth_chainId", []))
            if actual != self.chain_id:
                raise ChainIdMismatch(self.chain_id, actual, self._rpc.url)
            self._chain_checked = True
        head = self._head()
        finished: list[Outcome] = []
        broadcast_before = self.stats.broadcasts
        in_flight, replaced = self._reconcile(head, finished, resume=not self._resumed)
        self._resumed = True
        signed, more = self._sign_queued(head, finished)
        self.stats.consecutive_failures = 0
        return SendReport(
            leased=True,
            signed=signed,
            broadcast=self.stats.broadcasts - broadcast_before,
            replaced=replaced,
            in_flight=in_flight + signed,
            more_work=more,
            finished=tuple(finished),
        )

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _head(self) -> _Head:
        block = self._rpc.call("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, Mapping):
            raise ChainUnavailable(self._rpc.url, "no latest block")
        return _Head(
            number=_hex_int(block["number"]),
            has_base_fee=block_has_base_fee(block),
        )

    # --- in flight ----------------------------------------------------------------------

    def _reconcile(self, head: _Head, finished: list[Outcome], *, resume: bool) -> tuple[int, int]:
        with self._sessions() as session:
            requests_ = db.in_flight_requests(
                session=session, chain_id=self.chain_id, signer=self.signer
            )
        if not requests_:
            return 0, 0
        # The nonce first, the receipts after: a nonce used at `latest` whose receipt is not
        # among ours, even asked later, was used by someone else.
        latest_nonce = _hex_int(self._rpc.call("eth_getTransactionCount", [self.signer, "latest"]))
        receipts = self._receipts(a.tx_hash for r in requests_ for a in r.attempts)
        mined = {r.id: _mined_attempt(r, receipts) for r in requests_}
        suspects = [
            r
            for r in requests_
            if r.nonce is not None
            and latest_nonce > r.nonce
            and mined[r.id] is None
            and r.state is not RequestState.MINED
        ]
        if suspects:
            self._check_foreign(suspects)

        to_broadcast: list[tuple[Request, Attempt, str]] = []
        to_replace: list[Request] = []
        to_check: list[tuple[Request, Attempt]] = []
        changes: list[db.StateChange] = []
        mined_changes: list[db.MinedChange] = []
        events: list[_Event] = []
        now = self._now()
        for request in requests_:
            latest = request.latest_attempt
            if latest is None:  # cannot happen: in flight means signed
                continue
            found = mined[request.id]
            if found is not None:
                self._on_mined(head, request, *found, changes, mined_changes, events, finished)
                continue
            mined_changes.extend(
                db.MinedChange(a.id, None, None, None)
                for a in request.attempts
                if a.mined_block is not None
            )
            if request.state is RequestState.MINED:
                changes.append(db.StateChange(request.id, RequestState.SENT))
                events.append(
                    _Event(
                        "reorged",
                        request,
                        latest,
                        RequestState.SENT,
                        {"dropped_block": request.block_number},
                    )
                )
                to_broadcast.append((request, latest, "reorged"))
            elif latest.sent_at is None:
                to_broadcast.append((request, latest, "unsent"))
            elif resume:
                to_broadcast.append((request, latest, "restart"))
            elif is_due_for_replacement(
                int(latest.sent_at.timestamp()),
                int(now.timestamp()),
                Tier(request.tier),
                self.config.fee_policy,
            ):
                to_replace.append(request)
            else:
                to_check.append((request, latest))
        if changes or mined_changes:
            with self._sessions.begin() as session:
                db.set_attempts_mined(session=session, changes=mined_changes)
                db.set_request_states(session=session, changes=changes, now=now)
        for event in events:
            self._event(event.name, event.request, event.attempt, event.state, **event.extra)

        if to_check:
            answers = self._rpc.batch(
                [("eth_getTransactionByHash", [a.tx_hash]) for _, a in to_check]
            )
            for (request, attempt), answer in zip(to_check, answers, strict=True):
                if answer is None:
                    to_broadcast.append((request, attempt, "dropped"))
        if to_broadcast:
            self._broadcast(to_broadcast, head)
        replaced = sum(self._replace(request, head) for request in to_replace)
        done = {o.request_id for o in finished}
        return sum(1 for r in requests_ if r.id not in done), replaced

    def _receipts(self, hashes: Iterable[str]) -> dict[str, Mapping[str, Any] | None]:
        wanted = list(dict.fromkeys(hashes))
        answers = self._rpc.batch([("eth_getTransactionReceipt", [h]) for h in wanted])
        out: dict[str, Mapping[str, Any] | None] = {}
        for tx_hash, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, RpcError):
                raise ChainUnavailable(
                    self._rpc.url, f"eth_getTransactionReceipt: {answer.message}"
                )
            out[tx_hash] = (
                answer if isinstance(answer, Mapping) and answer.get("blockNumber") else None
            )
        return out

    def _check_foreign(self, suspects: Sequence[Request]) -> None:
        """Ask again before stopping: a reorg between the two reads could fool one look."""
        latest_nonce = _hex_int(self._rpc.call("eth_getTransactionCount", [self.signer, "latest"]))
        for request in suspects:
            assert request.nonce is not None
            receipts = self._receipts(a.tx_hash for a in request.attempts)
            if latest_nonce > request.nonce and not any(receipts.values()):
                self._alert(
                    "nonce_taken_by_foreign_transaction",
                    level=logging.ERROR,
                    request=request,
                    chain_nonce=latest_nonce,
                )
                raise NonceTakenByForeignTransaction(
                    self.chain_id, self.signer, request.nonce, request.id, request.idempotency_key
                )

    def _on_mined(
        self,
        head: _Head,
        request: Request,
        attempt: Attempt,
        receipt: Mapping[str, Any],
        changes: list[db.StateChange],
        mined_changes: list[db.MinedChange],
        events: list[_Event],
        finished: list[Outcome],
    ) -> None:
        block = _hex_int(receipt["blockNumber"])
        block_hash = str(receipt["blockHash"])
        status = _hex_int(receipt["status"])
        mined_changes.extend(
            db.MinedChange(other.id, None, None, None)
            for other in request.attempts
            if other.id != attempt.id and other.mined_block is not None
        )
        if attempt.mined_block != block or attempt.mined_block_hash != block_hash:
            mined_changes.append(db.MinedChange(attempt.id, block, block_hash, status))
        depth = confirmation_depth(head_block=head.number, mined_block=block)
        if depth >= self.config.confirmations:
            error_code = error_detail = None
            if status != 1:
                error_code, error_detail = self._revert_reason(request, attempt, block)
            state = RequestState.CONFIRMED if status == 1 else RequestState.REVERTED
            changes.append(
                db.StateChange(
                    request.id, state, attempt.tx_hash, block, block_hash, error_code, error_detail
                )
            )
            extra: dict[str, Any] = {"block": block, "depth": depth}
            if error_detail is not None:
                extra["error"] = error_detail
            events.append(_Event(state.value, request, attempt, state, extra))
            finished.append(
                Outcome(
                    request_id=request.id,
                    idempotency_key=request.idempotency_key,
                    state=state,
                    tx_hash=attempt.tx_hash,
                    block_number=block,
                    error_code=error_code,
                    error_detail=error_detail,
                )
            )
            return
        if (
            request.state is RequestState.MINED
            and request.block_hash == block_hash
            and request.tx_hash == attempt.tx_hash
        ):
            return  # still waiting for depth K
        changes.append(
            db.StateChange(request.id, RequestState.MINED, attempt.tx_hash, block, block_hash)
        )
        events.append(
            _Event("mined", request, attempt, RequestState.MINED, {"block": block, "depth": depth})
        )

    def _revert_reason(self, request: Request, attempt: Attempt, block: int) -> tuple[str, str]:
        """Replay the call before, then at, its block; decode the custom error it reverts with."""
        call = {
            "from": self.signer,
            "to": request.to_address,
            "data": "0x" + request.data.hex(),
            "gas": hex(attempt.gas_limit),
        }
        for tag in (hex(max(block - 1, 0)), hex(block)):
            answer = self._rpc.answer("eth_call", [call, tag])
            if isinstance(answer, RpcError):
                return self._describe(answer)
        return "reverted", "reverted on chain; the call does not revert when replayed"

    def _describe(self, error: RpcError) -> tuple[str, str]:
        data = error.revert_data()
        if data is not None and len(data) >= 4:
            decoded = self._decoder.decode(data)
            if decoded is not None:
                return decoded.name, str(decoded)
            return "reverted", f"{error.message} (data 0x{data.hex()})"
        return "reverted", error.message

    # --- broadcasting -------------------------------------------------------------------

    def _broadcast(self, items: Sequence[tuple[Request, Attempt, str]], head: _Head) -> None:
        answers = self._rpc.batch(
            [("eth_sendRawTransaction", ["0x" + a.raw_tx.hex()]) for _, a, _ in items]
        )
        if self._fault is not None:
            self._fault(AFTER_BROADCAST_BEFORE_MARK)
        sent: list[tuple[Request, Attempt, str, BroadcastResult]] = []
        for (request, attempt, reason), answer in zip(items, answers, strict=True):
            if isinstance(answer, RpcError):
                result = classify_broadcast_error(answer.message)
                if not counts_as_sent(result):
                    self._alert(
                        "broadcast_rejected",
                        level=logging.WARNING,
                        request=request,
                        attempt=attempt,
                        reason=answer.message,
                    )
                    continue
            else:
                result = BroadcastResult.ACCEPTED
            sent.append((request, attempt, reason, result))
        if not sent:
            return
        self.stats.broadcasts += len(sent)
        with self._sessions.begin() as session:
            db.mark_sent(
                session=session,
                attempt_ids=[a.id for _, a, _, _ in sent],
                now=self._now(),
                block=head.number,
            )
        for request, attempt, reason, result in sent:
            state = request.state
            if state is RequestState.SIGNED or reason == "reorged":
                state = RequestState.SENT
            self._event(
                "sent" if reason in ("unsent", "replacement") else "rebroadcast",
                request,
                attempt,
                state,
                reason=reason,
                node=result.value,
                sent_block=head.number,
            )

    # --- replacing ----------------------------------------------------------------------

    def _quote(self, tier: Tier, head: _Head) -> FeeQuote:
        quote = self._quotes.get(tier)
        if quote is not None:
            return quote
        policy = self.config.fee_policy
        if head.has_base_fee:
            if self._fee_history is None:
                raw = self._rpc.call(
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
            gas_price = Wei(_hex_int(self._rpc.call("eth_gasPrice", [])))
            quote = estimate_fees(
                latest_block_has_base_fee=False, tier=tier, policy=policy, gas_price_wei=gas_price
            )
        if quote.capped:
            self._alert(
                "fee_cap_reached",
                level=logging.WARNING,
                tier=tier.value,
                fee_cap_wei=policy.fee_cap_wei,
                uncapped=_fee_fields(quote.uncapped),
                capped=_fee_fields(quote.fees),
            )
        self._quotes[tier] = quote
        return quote

    def _replace(self, request: Request, head: _Head) -> int:
        previous = request.latest_attempt
        assert previous is not None and request.nonce is not None
        old = fees_of(previous)
        fresh: Fees | None = self._quote(Tier(request.tier), head).fees
        if type(fresh) is not type(old):
            fresh = None  # the chain changed fee markets; bump what we had
        replacement = bump(old, self.config.fee_policy, fresh_estimate=fresh)
        if replacement.fees is None:
            self._alert(
                "fee_cap_reached",
                level=logging.WARNING,
                request=request,
                attempt=previous,
                fee_cap_wei=self.config.fee_policy.fee_cap_wei,
                wanted=_fee_fields(replacement.uncapped),
                detail="no room under the cap for a +12.5 % replacement; waiting",
            )
            # Still make sure the node keeps the attempt we have.
            if self._rpc.answer("eth_getTransactionByHash", [previous.tx_hash]) is None:
                self._broadcast([(request, previous, "dropped")], head)
            return 0
        if replacement.capped:
            self._alert(
                "fee_cap_reached",
                level=logging.WARNING,
                request=request,
                fee_cap_wei=self.config.fee_policy.fee_cap_wei,
                wanted=_fee_fields(replacement.uncapped),
                capped=_fee_fields(replacement.fees),
            )
        raw, tx_hash = self._sign(request, request.nonce, previous.gas_limit, replacement.fees)
        with self._sessions.begin() as session:
            attempt = db.add_attempt(
                session=session,
                request_id=request.id,
                nonce=request.nonce,
                tx_hash=tx_hash,
                raw_tx=raw,
                fee_kind=_fee_kind(replacement.fees),
                gas_limit=previous.gas_limit,
                now=self._now(),
                **_fee_fields(replacement.fees),
            )
        self.stats.replaced += 1
        self._event(
            "replaced",
            request,
            attempt,
            request.state,
            replaces=previous.tx_hash,
            previous_fees=_fee_fields(old),
        )
        if self._fault is not None:
            self._fault(AFTER_COMMIT_BEFORE_BROADCAST)
        self._broadcast([(request, attempt, "replacement")], head)
        return 1

    # --- signing new requests -----------------------------------------------------------

    def _sign(self, request: Request, nonce: int, gas: int, fees: Fees) -> tuple[bytes, str]:
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": Web3.to_checksum_address(request.to_address),
            "value": 0,
            "data": request.data,
            "gas": gas,
            **fees.to_tx_params(),
        }
        if isinstance(fees, Eip1559Fees):
            tx["type"] = 2
        signed = Account.sign_transaction(tx, self._key)
        return bytes(signed.raw_transaction), "0x" + bytes(signed.hash).hex()

    def _sign_queued(self, head: _Head, finished: list[Outcome]) -> tuple[int, bool]:
        size = self.config.batch_size
        now = self._now()
        with self._sessions() as session:
            # One more than a batch tells whether requests are left for the next round.
            queued = db.queued_requests(
                session=session, chain_id=self.chain_id, signer=self.signer, now=now, limit=size + 1
            )
        # Every request of the batch is signed, failed or backing off after this round, so
        # the ones left are new work; a batch that cannot be estimated is not retried before
        # its backoff, so rounds never spin on it.
        more = len(queued) > size
        queued = queued[:size]
        if not queued:
            return 0, False
        gas, unestimated = self._gas_limits(queued)
        failed = [(r, g) for r in queued if isinstance(g := gas.get(r.id), tuple)]
        ready = [r for r in queued if isinstance(gas.get(r.id), int)]
        if unestimated:
            self._defer(unestimated, now)
        if failed:
            now = self._now()
            with self._sessions.begin() as session:
                for request, (code, detail) in failed:
                    db.set_request_state(
                        session=session,
                        request_id=request.id,
                        state=RequestState.FAILED,
                        now=now,
                        error_code=code,
                        error_detail=detail,
                    )
            for request, (code, detail) in failed:
                self._event("failed", request, None, RequestState.FAILED, error=detail)
                finished.append(
                    Outcome(
                        request.id,
                        request.idempotency_key,
                        RequestState.FAILED,
                        None,
                        None,
                        code,
                        detail,
                    )
                )
        if not ready:
            return 0, more
        pending = _hex_int(self._rpc.call("eth_getTransactionCount", [self.signer, "pending"]))
        quotes = {tier: self._quote(tier, head) for tier in {Tier(r.tier) for r in ready}}
        now = self._now()
        with self._sessions.begin() as session:
            stored = db.stored_next_nonce(
                session=session, chain_id=self.chain_id, signer=self.signer
            )
            first = db.allocate_nonces(
                session=session,
                chain_id=self.chain_id,
                signer=self.signer,
                chain_pending=pending,
                count=len(ready),
                now=now,
            )
            signed: list[db.NewAttempt] = []
            for offset, request in enumerate(ready):
                limit = gas[request.id]
                assert isinstance(limit, int)
                fees = quotes[Tier(request.tier)].fees
                raw, tx_hash = self._sign(request, first + offset, limit, fees)
                signed.append(
                    db.NewAttempt(
                        request_id=request.id,
                        nonce=first + offset,
                        tx_hash=tx_hash,
                        raw_tx=raw,
                        fee_kind=_fee_kind(fees),
                        gas_limit=limit,
                        **_fee_fields(fees),
                    )
                )
            attempts = db.add_first_attempts(session=session, attempts=signed, now=now)
        new = list(zip(ready, attempts, strict=True))
        if stored is not None and pending > stored:
            self._alert(
                "nonce_skipped",
                level=logging.WARNING,
                stored_next_nonce=stored,
                chain_pending_nonce=pending,
                detail="the chain is ahead of the outbox: this key signed elsewhere",
            )
        self.stats.signed += len(new)
        for request, attempt in new:
            self._event("signed", request, attempt, RequestState.SIGNED)
        if self._fault is not None:
            self._fault(AFTER_COMMIT_BEFORE_BROADCAST)
        self._broadcast(
            [(_signed(request, attempt), attempt, "unsent") for request, attempt in new], head
        )
        return len(new), more

    def _gas_limits(
        self, queued: Sequence[Request]
    ) -> tuple[dict[int, int | tuple[str, str]], list[tuple[Request, str]]]:
        """The stored gas limit, or the estimate plus margin; (code, detail) if it reverts.

        A request whose estimate fails for another reason (funds, node trouble) is left out
        of the dict and returned with the node's message, to back off (`_defer`).
        """
        out: dict[int, int | tuple[str, str]] = {}
        unestimated: list[tuple[Request, str]] = []
        need = [r for r in queued if r.gas_limit is None]
        for r in queued:
            if r.gas_limit is not None:
                out[r.id] = r.gas_limit
        if not need:
            return out, unestimated
        answers = self._rpc.batch(
            [
                (
                    "eth_estimateGas",
                    [{"from": self.signer, "to": r.to_address, "data": "0x" + r.data.hex()}],
                )
                for r in need
            ]
        )
        margin = self.config.gas_limit_margin_bp
        for request, answer in zip(need, answers, strict=True):
            if isinstance(answer, RpcError):
                if answer.is_revert:
                    out[request.id] = self._describe(answer)
                else:
                    unestimated.append((request, answer.message))
                continue
            out[request.id] = -(-_hex_int(answer) * margin // BP_ONE)
        return out, unestimated

    def _defer(self, unestimated: Sequence[tuple[Request, str]], now: datetime) -> None:
        """Keep requests whose estimate failed (not a revert) queued, skipped until a backoff
        that doubles with each failure in a row; one alert per request and failure.

        They own no nonce yet, so the requests behind them may be signed first.
        """
        deferrals: list[db.Deferral] = []
        for request, _ in unestimated:
            failures = request.estimate_failures + 1
            delay = backoff_s(
                failures=failures,
                initial_s=self.config.backoff_initial_s,
                max_s=self.config.backoff_max_s,
            )
            deferrals.append(db.Deferral(request.id, failures, now + timedelta(seconds=delay)))
        with self._sessions.begin() as session:
            db.defer_requests(session=session, deferrals=deferrals, now=now)
        for (request, reason), deferral in zip(unestimated, deferrals, strict=True):
            self._alert(
                "gas_estimate_failed",
                level=logging.WARNING,
                request=request,
                reason=reason,
                estimate_failures=deferral.estimate_failures,
                retry_after=deferral.retry_after.isoformat(),
            )

    # --- logs ---------------------------------------------------------------------------

    def _fields(self, request: Request | None, attempt: Attempt | None) -> dict[str, Any]:
        record: dict[str, Any] = {"chain_id": self.chain_id, "signer": self.signer}
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

    def _event(
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

    def _alert(
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


def _mined_attempt(
    request: Request, receipts: Mapping[str, Mapping[str, Any] | None]
) -> tuple[Attempt, Mapping[str, Any]] | None:
    """The attempt of `request` that is in a block, with its receipt (at most one can be)."""
    for attempt in request.attempts:
        receipt = receipts.get(attempt.tx_hash)
        if receipt is not None:
            return attempt, receipt
    return None


def _signed(request: Request, attempt: Attempt) -> Request:
    """The request as it is once its first attempt is stored (for logs and states)."""
    return replace(
        request,
        state=RequestState.SIGNED,
        nonce=attempt.nonce,
        gas_limit=attempt.gas_limit,
        attempts=(attempt,),
    )
