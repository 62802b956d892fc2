"""The resender: an attempt not mined by its tier's deadline is replaced.

Guarantees:
- a replacement has the same nonce, target, calldata and gas limit as the attempt it
  replaces; only its fees differ, both fee fields raised >= 12.5 % (`domain.gas.bump`), or
  to this round's estimate when that is higher;
- the fee cap is never exceeded: when it leaves no room for +12.5 %, nothing is signed, an
  alert is raised, and the attempt we have is broadcast again if the node lost it;
- the lease is checked (and renewed) right before signing; the replacement is stored and
  committed before it is broadcast (the broadcaster's guarantee).
"""

from __future__ import annotations

import logging

from granular.adapters.db import outbox as db
from granular.adapters.db.outbox import Request
from granular.domain.gas import Fees, Tier, bump
from granular.services.outbox_broadcaster import Broadcaster
from granular.services.outbox_common import (
    AFTER_COMMIT_BEFORE_BROADCAST,
    Head,
    SenderContext,
    fee_fields,
    fee_kind,
    fees_of,
)


class Resender:
    def __init__(self, ctx: SenderContext, broadcaster: Broadcaster) -> None:
        self._ctx = ctx
        self._broadcaster = broadcaster

    def replace(self, request: Request, head: Head) -> int:
        """Sign, store and send a replacement of the request's latest attempt: 1 if done."""
        ctx = self._ctx
        policy = ctx.config.fee_policy
        previous = request.latest_attempt
        assert previous is not None and request.nonce is not None
        old = fees_of(previous)
        fresh: Fees | None = ctx.quote(Tier(request.tier), head).fees
        if type(fresh) is not type(old):
            fresh = None  # the chain changed fee markets; bump what we had
        replacement = bump(old, policy, fresh_estimate=fresh)
        if replacement.fees is None:
            ctx.log.alert(
                "fee_cap_reached",
                level=logging.WARNING,
                request=request,
                attempt=previous,
                fee_cap_wei=policy.fee_cap_wei,
                wanted=fee_fields(replacement.uncapped),
                detail="no room under the cap for a +12.5 % replacement; waiting",
            )
            # Still make sure the node keeps the attempt we have.
            if ctx.rpc.answer("eth_getTransactionByHash", [previous.tx_hash]) is None:
                self._broadcaster.broadcast([(request, previous, "dropped")], head)
            return 0
        if replacement.capped:
            ctx.log.alert(
                "fee_cap_reached",
                level=logging.WARNING,
                request=request,
                fee_cap_wei=policy.fee_cap_wei,
                wanted=fee_fields(replacement.uncapped),
                capped=fee_fields(replacement.fees),
            )
        ctx.require_lease()
        raw, tx_hash = ctx.signer.sign(
            chain_id=ctx.chain_id,
            nonce=request.nonce,
            to=request.to_address,
            data=request.data,
            gas=previous.gas_limit,
            fees=replacement.fees,
        )
        with ctx.sessions.begin() as session:
            attempt = db.add_attempt(
                session=session,
                request_id=request.id,
                nonce=request.nonce,
                tx_hash=tx_hash,
                raw_tx=raw,
                fee_kind=fee_kind(replacement.fees),
                gas_limit=previous.gas_limit,
                now=ctx.now(),
                **fee_fields(replacement.fees),
            )
        ctx.stats.replaced += 1
        ctx.log.event(
            "replaced",
            request,
            attempt,
            request.state,
            replaces=previous.tx_hash,
            previous_fees=fee_fields(old),
        )
        ctx.reached(AFTER_COMMIT_BEFORE_BROADCAST)
        self._broadcaster.broadcast([(request, attempt, "replacement")], head)
        return 1
