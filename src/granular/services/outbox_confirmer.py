"""The confirmer: what the chain did with each request in flight, and what to do about it.

Guarantees:
- a request is final only at depth K: confirmed with status 1, reverted with status 0 and
  its custom error decoded; a revert whose reason cannot be read because of an RPC fault
  is not stored as final (it is read again next round);
- a receipt that disappeared (a reorg) sends the request back to `sent` and its stored
  attempt is broadcast again; an attempt the node forgot is broadcast again; a replacement
  the node refuses while the attempt it replaces left the pool re-sends that attempt;
- our nonce used by a transaction that is not ours stops the sender
  (NonceTakenByForeignTransaction), after a second look;
- the decisions are `domain.outbox.decide`; this part only fetches, stores and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from granular.adapters.chain.client import ChainUnavailable
from granular.adapters.chain.rpc import RpcError, describe_revert, hex_int
from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Attempt, Request
from granular.domain.gas import Tier
from granular.domain.outbox import (
    AttemptFacts,
    Decision,
    InFlight,
    NonceTakenByForeignTransaction,
    Receipt,
    RequestState,
    Verdict,
    decide,
)
from granular.services.outbox_broadcaster import Broadcaster, Send
from granular.services.outbox_common import Head, Outcome, SenderContext
from granular.services.outbox_resender import Resender

_FINAL = {Verdict.CONFIRMED: RequestState.CONFIRMED, Verdict.REVERTED: RequestState.REVERTED}


@dataclass
class _Round:
    """What one reconcile collects before it stores, logs and sends."""

    changes: list[db.StateChange]
    mined: list[db.MinedChange]
    events: list[tuple[str, Request, Attempt | None, RequestState, dict[str, Any]]]
    to_broadcast: list[Send]
    to_replace: list[Request]


class Confirmer:
    def __init__(self, ctx: SenderContext, broadcaster: Broadcaster, resender: Resender) -> None:
        self._ctx = ctx
        self._broadcaster = broadcaster
        self._resender = resender

    def reconcile(self, head: Head, finished: list[Outcome], *, resume: bool) -> tuple[int, int]:
        """Poll, decide and act on every request in flight: (still in flight, replaced)."""
        ctx = self._ctx
        with ctx.sessions() as session:
            requests_ = db.in_flight_requests(
                session=session, chain_id=ctx.chain_id, signer=ctx.address
            )
        if not requests_:
            return 0, 0
        # The nonce first, the receipts after: a nonce used at `latest` whose receipt is not
        # among ours, even asked later, was used by someone else.
        latest_nonce = ctx.rpc.int_call("eth_getTransactionCount", [ctx.address, "latest"])
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

        now_s = int(ctx.now().timestamp())
        decisions = {
            r.id: self._decide(r, mined[r.id], head, now_s, resume=resume, in_pool={})
            for r in requests_
        }
        asked = [h for d in decisions.values() for h in d.check_pool]
        if asked:
            answers = ctx.rpc.batch([("eth_getTransactionByHash", [h]) for h in asked])
            in_pool = {h: a is not None for h, a in zip(asked, answers, strict=True)}
            for r in requests_:
                if decisions[r.id].verdict is Verdict.CHECK_POOL:
                    decisions[r.id] = self._decide(
                        r, mined[r.id], head, now_s, resume=resume, in_pool=in_pool
                    )

        reasons: dict[int, tuple[str, str]] = {}
        for r in requests_:
            found = mined[r.id]
            if decisions[r.id].verdict is not Verdict.REVERTED or found is None:
                continue
            reason = self._revert_reason(r, found[0], hex_int(found[1]["blockNumber"]))
            if reason is None:  # an RPC fault: not final unless it lasts past the grace
                decisions[r.id] = self._decide(
                    r, found, head, now_s, resume=resume, in_pool={}, readable=False
                )
                if decisions[r.id].verdict is Verdict.REVERTED:
                    reason = ("reverted", "reverted on chain; the node never replayed the call")
                else:
                    ctx.log.alert(
                        "revert_reason_unavailable",
                        level=logging.WARNING,
                        request=r,
                        attempt=found[0],
                        detail="the node could not replay the reverted call; read next round",
                    )
            if reason is not None:
                reasons[r.id] = reason

        work = _Round([], [], [], [], [])
        for r in requests_:
            self._apply(r, mined[r.id], decisions[r.id], reasons.get(r.id), work, finished)
        if work.changes or work.mined:
            now = ctx.now()
            with ctx.sessions.begin() as session:
                db.set_attempts_mined(session=session, changes=work.mined)
                db.set_request_states(session=session, changes=work.changes, now=now)
        for name, request, attempt, state, extra in work.events:
            ctx.log.event(name, request, attempt, state, **extra)
        if work.to_broadcast:
            self._broadcaster.broadcast(work.to_broadcast, head)
        replaced = sum(self._resender.replace(request, head) for request in work.to_replace)
        done = {o.request_id for o in finished}
        return sum(1 for r in requests_ if r.id not in done), replaced

    def _decide(
        self,
        request: Request,
        found: tuple[Attempt, Mapping[str, Any]] | None,
        head: Head,
        now_s: int,
        *,
        resume: bool,
        in_pool: Mapping[str, bool],
        readable: bool = True,
    ) -> Decision:
        config = self._ctx.config
        receipt = _receipt(*found) if found is not None else None
        facts = InFlight(
            state=request.state,
            tx_hash=request.tx_hash,
            block_hash=request.block_hash,
            attempts=tuple(
                AttemptFacts(a.tx_hash, int(a.sent_at.timestamp()) if a.sent_at else None)
                for a in request.attempts
            ),
        )
        return decide(
            facts,
            receipt=receipt,
            head_block=head.number,
            confirmations=config.confirmations,
            now_s=now_s,
            deadline_s=config.fee_policy.for_tier(Tier(request.tier)).deadline_s,
            resume=resume,
            in_pool=in_pool,
            revert_readable=readable,
        )

    def _apply(
        self,
        request: Request,
        found: tuple[Attempt, Mapping[str, Any]] | None,
        decision: Decision,
        reason: tuple[str, str] | None,
        work: _Round,
        finished: list[Outcome],
    ) -> None:
        """Turn one decision into stored changes, log lines, broadcasts and replacements."""
        if found is None:
            work.mined.extend(
                db.MinedChange(a.id, None, None, None)
                for a in request.attempts
                if a.mined_block is not None
            )
        else:
            self._record_mined(request, *found, decision, reason, work, finished)
            return
        latest = request.latest_attempt
        assert latest is not None  # in flight means signed
        if decision.verdict is Verdict.REORGED:
            work.changes.append(db.StateChange(request.id, RequestState.SENT))
            work.events.append(
                (
                    "reorged",
                    request,
                    latest,
                    RequestState.SENT,
                    {"dropped_block": request.block_number},
                )
            )
        if decision.verdict is Verdict.REPLACE:
            work.to_replace.append(request)
        by_hash = {a.tx_hash: a for a in request.attempts}
        work.to_broadcast.extend((request, by_hash[h], reason) for h, reason in decision.broadcast)

    def _record_mined(
        self,
        request: Request,
        attempt: Attempt,
        receipt: Mapping[str, Any],
        decision: Decision,
        reason: tuple[str, str] | None,
        work: _Round,
        finished: list[Outcome],
    ) -> None:
        mined = _receipt(attempt, receipt)
        work.mined.extend(
            db.MinedChange(other.id, None, None, None)
            for other in request.attempts
            if other.id != attempt.id and other.mined_block is not None
        )
        if attempt.mined_block != mined.block or attempt.mined_block_hash != mined.block_hash:
            work.mined.append(
                db.MinedChange(attempt.id, mined.block, mined.block_hash, mined.status)
            )
        error_code, error_detail = reason if reason is not None else (None, None)
        state = _FINAL.get(decision.verdict)
        if state is not None:
            work.changes.append(
                db.StateChange(
                    request.id,
                    state,
                    attempt.tx_hash,
                    mined.block,
                    mined.block_hash,
                    error_code,
                    error_detail,
                )
            )
            extra: dict[str, Any] = {"block": mined.block, "depth": decision.depth}
            if error_detail is not None:
                extra["error"] = error_detail
            work.events.append((state.value, request, attempt, state, extra))
            finished.append(
                Outcome(
                    request_id=request.id,
                    idempotency_key=request.idempotency_key,
                    state=state,
                    tx_hash=attempt.tx_hash,
                    block_number=mined.block,
                    error_code=error_code,
                    error_detail=error_detail,
                )
            )
        elif decision.verdict is Verdict.MINED:
            work.changes.append(
                db.StateChange(
                    request.id, RequestState.MINED, attempt.tx_hash, mined.block, mined.block_hash
                )
            )
            work.events.append(
                (
                    "mined",
                    request,
                    attempt,
                    RequestState.MINED,
                    {"block": mined.block, "depth": decision.depth},
                )
            )

    def _revert_reason(
        self, request: Request, attempt: Attempt, block: int
    ) -> tuple[str, str] | None:
        """Replay the call before, then at, its block; decode the custom error it reverts with.

        None when the node could not run the call (an RPC fault, not an execution failure).
        """
        ctx = self._ctx
        call = {
            "from": ctx.address,
            "to": request.to_address,
            "data": "0x" + request.data.hex(),
            "gas": hex(attempt.gas_limit),
        }
        for tag in (hex(max(block - 1, 0)), hex(block)):
            answer = ctx.rpc.answer("eth_call", [call, tag])
            if isinstance(answer, RpcError):
                if not answer.is_execution_error:
                    return None
                return describe_revert(answer, ctx.decoder)
        return "reverted", "reverted on chain; the call does not revert when replayed"

    def _receipts(self, hashes: Iterable[str]) -> dict[str, Mapping[str, Any] | None]:
        ctx = self._ctx
        wanted = list(dict.fromkeys(hashes))
        answers = ctx.rpc.batch([("eth_getTransactionReceipt", [h]) for h in wanted])
        out: dict[str, Mapping[str, Any] | None] = {}
        for tx_hash, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, RpcError):
                raise ChainUnavailable(ctx.rpc.url, f"eth_getTransactionReceipt: {answer.message}")
            out[tx_hash] = (
                answer if isinstance(answer, Mapping) and answer.get("blockNumber") else None
            )
        return out

    def _check_foreign(self, suspects: Sequence[Request]) -> None:
        """Ask again before stopping: a reorg between the two reads could fool one look."""
        ctx = self._ctx
        latest_nonce = ctx.rpc.int_call("eth_getTransactionCount", [ctx.address, "latest"])
        for request in suspects:
            assert request.nonce is not None
            receipts = self._receipts(a.tx_hash for a in request.attempts)
            if latest_nonce > request.nonce and not any(receipts.values()):
                ctx.log.alert(
                    "nonce_taken_by_foreign_transaction",
                    level=logging.ERROR,
                    request=request,
                    chain_nonce=latest_nonce,
                )
                raise NonceTakenByForeignTransaction(
                    ctx.chain_id, ctx.address, request.nonce, request.id, request.idempotency_key
                )


def _receipt(attempt: Attempt, receipt: Mapping[str, Any]) -> Receipt:
    return Receipt(
        tx_hash=attempt.tx_hash,
        block=hex_int(receipt["blockNumber"]),
        block_hash=str(receipt["blockHash"]),
        status=hex_int(receipt["status"]),
    )


def _mined_attempt(
    request: Request, receipts: Mapping[str, Mapping[str, Any] | None]
) -> tuple[Attempt, Mapping[str, Any]] | None:
    """The attempt of `request` that is in a block, with its receipt (at most one can be)."""
    for attempt in request.attempts:
        receipt = receipts.get(attempt.tx_hash)
        if receipt is not None:
            return attempt, receipt
    return None
