"""The broadcaster: queued requests become signed attempts, and attempts reach a node.

Guarantees:
- a transaction is stored and committed before it is broadcast, so nothing of ours is ever
  on the wire unrecorded; a crash between the two re-sends the stored bytes on restart;
- nonces are allocated gapless, as max(stored next nonce, the chain's pending count), in
  the transaction that stores the attempts using them; a nonce is never given to two
  payloads (unique per signer in the database);
- the lease is checked (and renewed) right before signing;
- a request whose gas estimate reverts fails without taking a nonce; one whose estimate
  fails for another reason stays queued behind a doubling backoff, and the requests behind
  it are signed meanwhile;
- "already known", "nonce too low" and "underpriced" answers to our broadcast count as
  sent (the confirmer and the resender take it from there); any other refusal is alerted
  and the attempt stays unsent, to be broadcast again next round.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from granular.adapters.chain.rpc import (
    BroadcastResult,
    RpcError,
    classify_broadcast_error,
    counts_as_sent,
    describe_revert,
    hex_int,
)
from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Attempt, Request
from granular.domain.gas import BP_ONE, Tier
from granular.domain.outbox import RequestState, backoff_s
from granular.services.outbox_common import (
    AFTER_BROADCAST_BEFORE_MARK,
    AFTER_COMMIT_BEFORE_BROADCAST,
    Head,
    Outcome,
    SenderContext,
    fee_fields,
    fee_kind,
)

# (request, attempt, reason): reason is "unsent", "replacement", "restart", "reorged" or
# "dropped"; the first two log "sent", the others "rebroadcast".
Send = tuple[Request, Attempt, str]


class Broadcaster:
    def __init__(self, ctx: SenderContext) -> None:
        self._ctx = ctx

    # --- broadcasting -------------------------------------------------------------------

    def broadcast(self, items: Sequence[Send], head: Head) -> None:
        """Send the stored bytes; stamp those a node took (or already had) as sent."""
        ctx = self._ctx
        answers = ctx.rpc.batch(
            [("eth_sendRawTransaction", ["0x" + a.raw_tx.hex()]) for _, a, _ in items]
        )
        ctx.reached(AFTER_BROADCAST_BEFORE_MARK)
        sent: list[tuple[Request, Attempt, str, BroadcastResult]] = []
        for (request, attempt, reason), answer in zip(items, answers, strict=True):
            if isinstance(answer, RpcError):
                result = classify_broadcast_error(answer.message)
                if not counts_as_sent(result):
                    ctx.log.alert(
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
        ctx.stats.broadcasts += len(sent)
        with ctx.sessions.begin() as session:
            db.mark_sent(
                session=session,
                attempt_ids=[a.id for _, a, _, _ in sent],
                now=ctx.now(),
                block=head.number,
            )
        for request, attempt, reason, result in sent:
            state = request.state
            if state is RequestState.SIGNED or reason == "reorged":
                state = RequestState.SENT
            ctx.log.event(
                "sent" if reason in ("unsent", "replacement") else "rebroadcast",
                request,
                attempt,
                state,
                reason=reason,
                node=result.value,
                sent_block=head.number,
            )

    # --- signing queued requests --------------------------------------------------------

    def sign_queued(self, head: Head, finished: list[Outcome]) -> tuple[int, bool]:
        """Sign and send up to a batch of queued requests: (signed, more left)."""
        ctx = self._ctx
        size = ctx.config.batch_size
        now = ctx.now()
        with ctx.sessions() as session:
            # One more than a batch tells whether requests are left for the next round.
            queued = db.queued_requests(
                session=session, chain_id=ctx.chain_id, signer=ctx.address, now=now, limit=size + 1
            )
        # Every request of the batch is signed, failed or backing off after this round, so
        # the ones left are new work; a batch that cannot be estimated is not retried before
        # its backoff, so rounds never spin on it.
        more = len(queued) > size
        queued = queued[:size]
        if not queued:
            return 0, False
        gas, failed, unestimated = self._gas_limits(queued)
        if unestimated:
            self._defer(unestimated, now)
        if failed:
            self._fail(failed, finished)
        ready = [r for r in queued if r.id in gas]
        if not ready:
            return 0, more
        pending = ctx.rpc.int_call("eth_getTransactionCount", [ctx.address, "pending"])
        quotes = {tier: ctx.quote(tier, head) for tier in {Tier(r.tier) for r in ready}}
        ctx.require_lease()
        now = ctx.now()
        with ctx.sessions.begin() as session:
            stored = db.stored_next_nonce(
                session=session, chain_id=ctx.chain_id, signer=ctx.address
            )
            first = db.allocate_nonces(
                session=session,
                chain_id=ctx.chain_id,
                signer=ctx.address,
                chain_pending=pending,
                count=len(ready),
                now=now,
            )
            signed: list[db.NewAttempt] = []
            for offset, request in enumerate(ready):
                fees = quotes[Tier(request.tier)].fees
                raw, tx_hash = ctx.signer.sign(
                    chain_id=ctx.chain_id,
                    nonce=first + offset,
                    to=request.to_address,
                    data=request.data,
                    gas=gas[request.id],
                    fees=fees,
                )
                signed.append(
                    db.NewAttempt(
                        request_id=request.id,
                        nonce=first + offset,
                        tx_hash=tx_hash,
                        raw_tx=raw,
                        fee_kind=fee_kind(fees),
                        gas_limit=gas[request.id],
                        **fee_fields(fees),
                    )
                )
            attempts = db.add_first_attempts(session=session, attempts=signed, now=now)
        new = list(zip(ready, attempts, strict=True))
        if stored is not None and pending > stored:
            ctx.log.alert(
                "nonce_skipped",
                level=logging.WARNING,
                stored_next_nonce=stored,
                chain_pending_nonce=pending,
                detail="the chain is ahead of the outbox: this key signed elsewhere",
            )
        ctx.stats.signed += len(new)
        for request, attempt in new:
            ctx.log.event("signed", request, attempt, RequestState.SIGNED)
        ctx.reached(AFTER_COMMIT_BEFORE_BROADCAST)
        self.broadcast(
            [(_signed(request, attempt), attempt, "unsent") for request, attempt in new], head
        )
        return len(new), more

    def _gas_limits(
        self, queued: Sequence[Request]
    ) -> tuple[dict[int, int], list[tuple[Request, str, str]], list[tuple[Request, str]]]:
        """The stored gas limit, or the estimate plus margin, by request id; the requests
        whose estimate reverts, with (code, detail); the ones whose estimate fails for
        another reason (funds, node trouble), with the node's message, to back off."""
        ctx = self._ctx
        gas = {r.id: r.gas_limit for r in queued if r.gas_limit is not None}
        failed: list[tuple[Request, str, str]] = []
        unestimated: list[tuple[Request, str]] = []
        need = [r for r in queued if r.gas_limit is None]
        if not need:
            return gas, failed, unestimated
        answers = ctx.rpc.batch(
            [
                (
                    "eth_estimateGas",
                    [{"from": ctx.address, "to": r.to_address, "data": "0x" + r.data.hex()}],
                )
                for r in need
            ]
        )
        margin = ctx.config.gas_limit_margin_bp
        for request, answer in zip(need, answers, strict=True):
            if isinstance(answer, RpcError):
                if answer.is_revert:
                    failed.append((request, *describe_revert(answer, ctx.decoder)))
                else:
                    unestimated.append((request, answer.message))
                continue
            gas[request.id] = -(-hex_int(answer) * margin // BP_ONE)
        return gas, failed, unestimated

    def _fail(self, failed: Sequence[tuple[Request, str, str]], finished: list[Outcome]) -> None:
        ctx = self._ctx
        now = ctx.now()
        changes = [
            db.StateChange(r.id, RequestState.FAILED, error_code=code, error_detail=detail)
            for r, code, detail in failed
        ]
        with ctx.sessions.begin() as session:
            db.set_request_states(session=session, changes=changes, now=now)
        for request, code, detail in failed:
            ctx.log.event("failed", request, None, RequestState.FAILED, error=detail)
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

    def _defer(self, unestimated: Sequence[tuple[Request, str]], now: datetime) -> None:
        """Keep requests whose estimate failed (not a revert) queued, skipped until a backoff
        that doubles with each failure in a row; one alert per request and failure.

        They own no nonce yet, so the requests behind them may be signed first.
        """
        ctx = self._ctx
        deferrals: list[db.Deferral] = []
        for request, _ in unestimated:
            failures = request.estimate_failures + 1
            delay = backoff_s(
                failures=failures,
                initial_s=ctx.config.backoff_initial_s,
                max_s=ctx.config.backoff_max_s,
            )
            deferrals.append(db.Deferral(request.id, failures, now + timedelta(seconds=delay)))
        with ctx.sessions.begin() as session:
            db.defer_requests(session=session, deferrals=deferrals, now=now)
        for (request, reason), deferral in zip(unestimated, deferrals, strict=True):
            ctx.log.alert(
                "gas_estimate_failed",
                level=logging.WARNING,
                request=request,
                reason=reason,
                estimate_failures=deferral.estimate_failures,
                retry_after=deferral.retry_after.isoformat(),
            )


def _signed(request: Request, attempt: Attempt) -> Request:
    """The request as it is once its first attempt is stored (for logs and states)."""
    return replace(
        request,
        state=RequestState.SIGNED,
        nonce=attempt.nonce,
        gas_limit=attempt.gas_limit,
        attempts=(attempt,),
    )
