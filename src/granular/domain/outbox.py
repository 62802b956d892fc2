"""The outbox's rules as values (DESIGN.md §6): request states, confirmation depth, backoff,
and `decide`, what to do next with a request in flight. Pure: no I/O, time passed in.

`decide` is the whole reconcile policy, in the order it applies:

1. one of its attempts has a receipt: at depth >= K it is final (confirmed with status 1,
   reverted with status 0, unless the revert's reason could not be read: then it waits,
   for at most REVERT_REASON_GRACE_BLOCKS);
   below K it is mined (recorded once per block it is in);
2. it was mined and no attempt has a receipt any more (a reorg): back to sent, the latest
   attempt broadcast again;
3. its latest attempt never reached a node: broadcast it; when that attempt replaces an
   earlier one that left the node's pool, the earlier one is broadcast again first, so a
   replacement the node keeps refusing never leaves the request with nothing in the pool;
4. a restart: broadcast the latest attempt again;
5. its tier's deadline passed since the latest attempt was sent: replace it;
6. otherwise ask the node whether it still has the latest attempt; if not (dropped),
   broadcast it again.

A pool answer the caller has not fetched yet is asked for (`Verdict.CHECK_POOL`); the
caller asks the node and calls `decide` again with the answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from granular.errors import GranularError


class RequestState(StrEnum):
    """Where a request is. Final states: confirmed, reverted, failed."""

    QUEUED = "queued"  # waiting for a nonce
    SIGNED = "signed"  # an attempt is stored; not yet known to have reached a node
    SENT = "sent"  # broadcast and not in a block (again, after a reorg): unconfirmed
    MINED = "mined"  # in a block, fewer than K confirmations
    CONFIRMED = "confirmed"  # mined with status 1 at depth K
    REVERTED = "reverted"  # mined with status 0 at depth K; the decoded error is stored
    FAILED = "failed"  # never signed: the call reverts already when its gas is estimated


FINAL_STATES = frozenset({RequestState.CONFIRMED, RequestState.REVERTED, RequestState.FAILED})
IN_FLIGHT_STATES = (RequestState.SIGNED, RequestState.SENT, RequestState.MINED)

# A revert whose reason cannot be read (the node has no state for the block any more, or
# keeps failing) is stored without its reason once it is this many blocks past depth K:
# about what a pruning node keeps.
REVERT_REASON_GRACE_BLOCKS = 128


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
            "else signs with this key",
            {"field": "nonce", "value": nonce, "rule": "used only by the outbox's attempts"},
        )


def confirmation_depth(*, head_block: int, mined_block: int) -> int:
    """1 when the transaction is in the head block, 2 one block later, ..."""
    return head_block - mined_block + 1


def backoff_s(*, failures: int, initial_s: float, max_s: float) -> float:
    """The pause after the `failures`-th failure in a row: initial_s, doubling, at most max_s."""
    exponent = min(max(failures - 1, 0), 64)  # 2.0 ** 1024 would overflow; max_s caps it anyway
    return min(max_s, initial_s * 2.0**exponent)


# --- decide -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptFacts:
    """What `decide` needs of one signed attempt. sent_at_s: None until a node took it."""

    tx_hash: str
    sent_at_s: int | None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The receipt of one of the request's attempts (at most one can have one)."""

    tx_hash: str
    block: int
    block_hash: str
    status: int


@dataclass(frozen=True, slots=True)
class InFlight:
    """A signed, sent or mined request: its state, the block it was recorded in (if
    mined) and its attempts, oldest first (never empty)."""

    state: RequestState
    tx_hash: str | None
    block_hash: str | None
    attempts: tuple[AttemptFacts, ...]


class Verdict(StrEnum):
    CONFIRMED = "confirmed"  # final, status 1
    REVERTED = "reverted"  # final, status 0, reason readable
    MINED = "mined"  # in a block below depth K, not yet recorded there
    WAITING = "waiting"  # in the recorded block, below depth K (or its revert unreadable)
    REORGED = "reorged"  # was mined, no receipt now: back to sent, broadcast again
    BROADCAST = "broadcast"  # broadcast the attempts listed
    REPLACE = "replace"  # sign a replacement at higher fees
    CHECK_POOL = "check_pool"  # ask the node for the attempts listed, then decide again
    NOTHING = "nothing"  # in the pool, before its deadline


@dataclass(frozen=True, slots=True)
class Decision:
    """broadcast: (tx hash, reason) in the order to send; reasons are "unsent",
    "restart", "reorged" and "dropped". check_pool: hashes to ask the node about."""

    verdict: Verdict
    depth: int | None = None
    broadcast: tuple[tuple[str, str], ...] = ()
    check_pool: tuple[str, ...] = ()


def decide(
    request: InFlight,
    *,
    receipt: Receipt | None,
    head_block: int,
    confirmations: int,
    now_s: int,
    deadline_s: int,
    resume: bool,
    in_pool: Mapping[str, bool],
    revert_readable: bool = True,
) -> Decision:
    """What to do with `request` this round (see the module's list, in that order).

    in_pool: the node's answer (has it the transaction?) for hashes asked before.
    revert_readable: False when the reason of a status-0 receipt could not be read (an RPC
    fault): the request is not final yet, so a fault never stores a wrong reason; past
    REVERT_REASON_GRACE_BLOCKS beyond depth K it is final without one.
    """
    if receipt is not None:
        depth = confirmation_depth(head_block=head_block, mined_block=receipt.block)
        if depth >= confirmations:
            if receipt.status == 1:
                return Decision(Verdict.CONFIRMED, depth=depth)
            if revert_readable or depth >= confirmations + REVERT_REASON_GRACE_BLOCKS:
                return Decision(Verdict.REVERTED, depth=depth)
        recorded = (
            request.state is RequestState.MINED
            and request.block_hash == receipt.block_hash
            and request.tx_hash == receipt.tx_hash
        )
        return Decision(Verdict.WAITING if recorded else Verdict.MINED, depth=depth)
    latest = request.attempts[-1]
    if request.state is RequestState.MINED:
        return Decision(Verdict.REORGED, broadcast=((latest.tx_hash, "reorged"),))
    if latest.sent_at_s is None:
        return _unsent(request.attempts, in_pool)
    if resume:
        return Decision(Verdict.BROADCAST, broadcast=((latest.tx_hash, "restart"),))
    if now_s - latest.sent_at_s >= deadline_s:
        return Decision(Verdict.REPLACE)
    known = in_pool.get(latest.tx_hash)
    if known is None:
        return Decision(Verdict.CHECK_POOL, check_pool=(latest.tx_hash,))
    if not known:
        return Decision(Verdict.BROADCAST, broadcast=((latest.tx_hash, "dropped"),))
    return Decision(Verdict.NOTHING)


def _unsent(attempts: Sequence[AttemptFacts], in_pool: Mapping[str, bool]) -> Decision:
    latest = attempts[-1]
    previous = next((a for a in reversed(attempts[:-1]) if a.sent_at_s is not None), None)
    unsent = ((latest.tx_hash, "unsent"),)
    if previous is None:
        return Decision(Verdict.BROADCAST, broadcast=unsent)
    known = in_pool.get(previous.tx_hash)
    if known is None:
        return Decision(Verdict.CHECK_POOL, check_pool=(previous.tx_hash,))
    if known:
        return Decision(Verdict.BROADCAST, broadcast=unsent)
    return Decision(Verdict.BROADCAST, broadcast=((previous.tx_hash, "dropped"), *unsent))
