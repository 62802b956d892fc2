"""Fee maths for the transaction outbox (DESIGN.md §6.3-6.4): pure, no I/O, no web3.

The adapter fetches the inputs (the latest block, `eth_feeHistory` or `eth_gasPrice`, the
clock) and passes them in; this module returns fees as integers of wei per gas.

- EIP-1559 when the latest block carries `baseFeePerGas`: the priority fee is the median of
  the tier's reward percentile over the non-empty blocks of the history, never below a floor;
  the max fee is the next block's base fee times the tier's headroom plus the priority fee.
- Legacy otherwise: `eth_gasPrice` times the tier's multiplier.
- A configured cap on the fee per gas is never exceeded; results say when it bit.
- A replacement raises both fee fields by at least 12.5 % (rounded up), or says it cannot.

Ratios are basis points (10 000 bp = 1x); every division rounds up, so a fee is never
below what its rule asks for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import pairwise
from typing import Literal, NewType

from granular.errors import ConfigurationError, FieldRuleError, ValidationError

Wei = NewType("Wei", int)

BP_ONE = 10_000  # 1x in basis points

DEFAULT_PRIORITY_FEE_FLOOR_WEI = Wei(1_000_000_000)  # 1 gwei
MIN_REPLACEMENT_BUMP_BP = 1_250  # +12.5 %: OpenEthereum's rule; geth asks for 10 %
FEE_HISTORY_BLOCK_COUNT = 10  # blocks of eth_feeHistory the adapter asks for
# The percentiles the default policy reads; pass `list(policy.reward_percentiles)` as the
# third argument of eth_feeHistory (this constant equals `FeePolicy().reward_percentiles`).
REWARD_PERCENTILES: tuple[int, ...] = (10, 50, 90)


# --- errors -------------------------------------------------------------------------------


class FeeError(FieldRuleError, ValidationError):
    """A fee input or value broke a rule of this module.

    `field`, `value` and `rule` are attributes; `details` holds them as a flat mapping (the
    shape `domain.units.RuleViolation` uses) so an API can render it without parsing.
    """

    code = "fee_error"


class FeeHistoryMalformed(FeeError):
    """An `eth_feeHistory` answer that cannot be read as the spec describes."""

    code = "fee_history_malformed"


class FeesInvalid(FeeError):
    """A fee value that cannot be sent: negative, or a tip above the max fee."""

    code = "fees_invalid"


class FeeKindMismatch(FeeError):
    """An EIP-1559 fee mixed with a legacy one (e.g. a replacement of the other kind)."""

    code = "fee_kind_mismatch"


class FeeInputMissing(FeeError):
    """`estimate_fees` lacks the input its chain type needs."""

    code = "fee_input_missing"


class FeePolicyInvalid(FieldRuleError, ConfigurationError):
    """A fee policy setting out of range or out of tier order."""

    code = "fee_policy_invalid"
    subject = "fee policy "


# --- tiers and policy ---------------------------------------------------------------------


class Tier(StrEnum):
    """How urgently a request should be mined. Ordered slow < standard < fast."""

    SLOW = "slow"
    STANDARD = "standard"
    FAST = "fast"


TIERS_SLOW_TO_FAST: tuple[Tier, ...] = (Tier.SLOW, Tier.STANDARD, Tier.FAST)


@dataclass(frozen=True, slots=True)
class TierPolicy:
    """The knobs of one tier.

    deadline_s: an attempt not mined this long after it was sent is replaced
        (`domain.outbox.decide`, at the deadline exactly).
    reward_percentile: the eth_feeHistory reward column whose median is the priority fee.
    base_fee_headroom_bp: max fee = next base fee x this / 10 000 + priority fee.
    legacy_multiplier_bp: gas price = eth_gasPrice x this / 10 000.
    """

    deadline_s: int
    reward_percentile: int
    base_fee_headroom_bp: int
    legacy_multiplier_bp: int


DEFAULT_SLOW_TIER = TierPolicy(
    deadline_s=1_800,
    reward_percentile=10,
    base_fee_headroom_bp=12_500,
    legacy_multiplier_bp=10_000,
)

DEFAULT_STANDARD_TIER = TierPolicy(
    deadline_s=300,
    reward_percentile=50,
    base_fee_headroom_bp=15_000,
    legacy_multiplier_bp=11_000,
)

DEFAULT_FAST_TIER = TierPolicy(
    deadline_s=30,
    reward_percentile=90,
    base_fee_headroom_bp=20_000,
    legacy_multiplier_bp=12_500,
)


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """Per-tier knobs plus the priority floor, the fee cap and the replacement bump.

    fee_cap_wei caps the fee per gas: `maxFeePerGas` (and so the tip) on EIP-1559 chains,
    `gasPrice` on legacy ones. None means no cap.
    """

    slow: TierPolicy = DEFAULT_SLOW_TIER
    standard: TierPolicy = DEFAULT_STANDARD_TIER
    fast: TierPolicy = DEFAULT_FAST_TIER
    priority_fee_floor_wei: Wei = DEFAULT_PRIORITY_FEE_FLOOR_WEI
    fee_cap_wei: Wei | None = None
    replacement_bump_bp: int = MIN_REPLACEMENT_BUMP_BP

    def __post_init__(self) -> None:
        for tier in TIERS_SLOW_TO_FAST:
            tp = self.for_tier(tier)
            _require_policy(tp.deadline_s >= 1, f"{tier}.deadline_s", tp.deadline_s, ">= 1 s")
            _require_policy(
                0 <= tp.reward_percentile <= 100,
                f"{tier}.reward_percentile",
                tp.reward_percentile,
                "between 0 and 100",
            )
            _require_policy(
                tp.base_fee_headroom_bp >= BP_ONE,
                f"{tier}.base_fee_headroom_bp",
                tp.base_fee_headroom_bp,
                f">= {BP_ONE} bp (1x the next base fee), or the tx cannot be included",
            )
            _require_policy(
                tp.legacy_multiplier_bp >= BP_ONE,
                f"{tier}.legacy_multiplier_bp",
                tp.legacy_multiplier_bp,
                f">= {BP_ONE} bp (never below the node's gas price)",
            )
        for lower, higher in ((Tier.SLOW, Tier.STANDARD), (Tier.STANDARD, Tier.FAST)):
            lo, hi = self.for_tier(lower), self.for_tier(higher)
            rule = f"{lower} <= {higher}"
            _require_policy(
                lo.reward_percentile <= hi.reward_percentile,
                f"{higher}.reward_percentile",
                hi.reward_percentile,
                f"{rule} ({lower} is {lo.reward_percentile})",
            )
            _require_policy(
                lo.base_fee_headroom_bp <= hi.base_fee_headroom_bp,
                f"{higher}.base_fee_headroom_bp",
                hi.base_fee_headroom_bp,
                f"{rule} ({lower} is {lo.base_fee_headroom_bp})",
            )
            _require_policy(
                lo.legacy_multiplier_bp <= hi.legacy_multiplier_bp,
                f"{higher}.legacy_multiplier_bp",
                hi.legacy_multiplier_bp,
                f"{rule} ({lower} is {lo.legacy_multiplier_bp})",
            )
            _require_policy(
                lo.deadline_s >= hi.deadline_s,
                f"{higher}.deadline_s",
                hi.deadline_s,
                f"a faster tier's deadline <= a slower one's ({lower} is {lo.deadline_s})",
            )
        _require_policy(
            self.priority_fee_floor_wei >= 0,
            "priority_fee_floor_wei",
            self.priority_fee_floor_wei,
            ">= 0",
        )
        if self.fee_cap_wei is not None:
            _require_policy(self.fee_cap_wei >= 1, "fee_cap_wei", self.fee_cap_wei, ">= 1 wei")
        _require_policy(
            self.replacement_bump_bp >= MIN_REPLACEMENT_BUMP_BP,
            "replacement_bump_bp",
            self.replacement_bump_bp,
            f">= {MIN_REPLACEMENT_BUMP_BP} bp (+12.5 %, what OpenEthereum accepts)",
        )

    def for_tier(self, tier: Tier) -> TierPolicy:
        if tier is Tier.SLOW:
            return self.slow
        if tier is Tier.STANDARD:
            return self.standard
        return self.fast

    @property
    def reward_percentiles(self) -> tuple[int, ...]:
        """The percentiles to request from eth_feeHistory: sorted, without repeats."""
        return tuple(sorted({self.for_tier(t).reward_percentile for t in TIERS_SLOW_TO_FAST}))


def _require_policy(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise FeePolicyInvalid(field, value, rule)


# --- fees ---------------------------------------------------------------------------------


class FeeKind(StrEnum):
    EIP1559 = "eip1559"
    LEGACY = "legacy"


@dataclass(frozen=True, slots=True)
class Eip1559Fees:
    max_fee_per_gas_wei: Wei
    max_priority_fee_per_gas_wei: Wei
    kind: Literal[FeeKind.EIP1559] = field(default=FeeKind.EIP1559, init=False)

    def __post_init__(self) -> None:
        _require_fee(self.max_fee_per_gas_wei >= 0, "max_fee_per_gas_wei", self.max_fee_per_gas_wei)
        _require_fee(
            self.max_priority_fee_per_gas_wei >= 0,
            "max_priority_fee_per_gas_wei",
            self.max_priority_fee_per_gas_wei,
        )
        if self.max_priority_fee_per_gas_wei > self.max_fee_per_gas_wei:
            raise FeesInvalid(
                "max_priority_fee_per_gas_wei",
                self.max_priority_fee_per_gas_wei,
                f"<= max_fee_per_gas_wei ({self.max_fee_per_gas_wei})",
            )

    def to_tx_params(self) -> dict[str, int]:
        """The fee keys of a web3/eth-account transaction dict."""
        return {
            "maxFeePerGas": self.max_fee_per_gas_wei,
            "maxPriorityFeePerGas": self.max_priority_fee_per_gas_wei,
        }


@dataclass(frozen=True, slots=True)
class LegacyFees:
    gas_price_wei: Wei
    kind: Literal[FeeKind.LEGACY] = field(default=FeeKind.LEGACY, init=False)

    def __post_init__(self) -> None:
        _require_fee(self.gas_price_wei >= 0, "gas_price_wei", self.gas_price_wei)

    def to_tx_params(self) -> dict[str, int]:
        """The fee key of a web3/eth-account transaction dict."""
        return {"gasPrice": self.gas_price_wei}


Fees = Eip1559Fees | LegacyFees


def _require_fee(ok: bool, field: str, value: int) -> None:
    if not ok:
        raise FeesInvalid(field, value, ">= 0 wei")


@dataclass(frozen=True, slots=True)
class FeeQuote:
    """Fees for a first attempt.

    capped: the cap lowered at least one field of `uncapped`; the caller logs an alert.
    """

    fees: Fees
    uncapped: Fees
    capped: bool


@dataclass(frozen=True, slots=True)
class Replacement:
    """Fees for a replacement attempt, or None when the cap leaves no room for +12.5 %.

    uncapped: what the bump rule (and the fresh estimate) asked for before the cap.
    capped: the cap lowered at least one field; the caller logs an alert.
    """

    fees: Fees | None
    uncapped: Fees
    capped: bool

    @property
    def can_replace(self) -> bool:
        return self.fees is not None


# --- fee history --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeHistory:
    """An `eth_feeHistory` answer in integers.

    base_fee_per_gas_wei has one entry per block plus the next block's (the last one);
    reward_wei has one row per block and, in each row, one value per entry of
    reward_percentiles (the percentiles that were requested, in increasing order).
    """

    oldest_block: int
    base_fee_per_gas_wei: tuple[Wei, ...]
    gas_used_ratio: tuple[Decimal, ...]
    reward_percentiles: tuple[int, ...]
    reward_wei: tuple[tuple[Wei, ...], ...]

    def __post_init__(self) -> None:
        blocks = len(self.gas_used_ratio)
        _require_history(self.oldest_block >= 0, "oldestBlock", self.oldest_block, ">= 0")
        _require_history(blocks >= 1, "gasUsedRatio", self.gas_used_ratio, "at least one block")
        _require_history(
            len(self.base_fee_per_gas_wei) == blocks + 1,
            "baseFeePerGas",
            self.base_fee_per_gas_wei,
            f"one entry per block plus the next block's ({blocks + 1})",
        )
        _require_history(
            len(self.reward_wei) == blocks,
            "reward",
            self.reward_wei,
            f"one row per block ({blocks})",
        )
        _require_history(
            all(0 <= p <= 100 for p in self.reward_percentiles)
            and all(a < b for a, b in pairwise(self.reward_percentiles)),
            "reward_percentiles",
            self.reward_percentiles,
            "strictly increasing, between 0 and 100",
        )
        for i, fee in enumerate(self.base_fee_per_gas_wei):
            _require_history(fee >= 0, f"baseFeePerGas[{i}]", fee, ">= 0")
        for i, ratio in enumerate(self.gas_used_ratio):
            _require_history(0 <= ratio <= 1, f"gasUsedRatio[{i}]", ratio, "between 0 and 1")
        for i, row in enumerate(self.reward_wei):
            _require_history(
                len(row) == len(self.reward_percentiles),
                f"reward[{i}]",
                row,
                f"one value per requested percentile ({len(self.reward_percentiles)})",
            )
            for j, reward in enumerate(row):
                _require_history(reward >= 0, f"reward[{i}][{j}]", reward, ">= 0")

    @property
    def next_base_fee_per_gas_wei(self) -> Wei:
        """The base fee of the block after the newest one in the history."""
        return self.base_fee_per_gas_wei[-1]


def _require_history(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise FeeHistoryMalformed(field, value, rule)


def _quantity(raw: object, field: str) -> int:
    """A JSON-RPC quantity: a "0x" hex string, or an int (web3 converts them)."""
    if isinstance(raw, bool):
        raise FeeHistoryMalformed(field, raw, "a hex quantity or an int")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw[:2] in ("0x", "0X") and len(raw) > 2:
        try:
            value = int(raw[2:], 16)
        except ValueError:
            raise FeeHistoryMalformed(field, raw, "a hex quantity or an int") from None
    else:
        raise FeeHistoryMalformed(field, raw, "a hex quantity or an int")
    _require_history(value >= 0, field, raw, ">= 0")
    return value


def _ratio(raw: object, field: str) -> Decimal:
    """gasUsedRatio arrives as a JSON number; read it as the decimal it prints as."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise FeeHistoryMalformed(field, raw, "a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise FeeHistoryMalformed(field, raw, "a number") from None
    _require_history(value.is_finite(), field, raw, "a finite number")
    return value


def _sequence(raw: object, field: str) -> Sequence[object]:
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise FeeHistoryMalformed(field, raw, "a list")
    return raw


def parse_fee_history(
    raw: Mapping[str, object], *, reward_percentiles: Sequence[int]
) -> FeeHistory:
    """Read an `eth_feeHistory` result (raw hex JSON, or web3's int-converted dict).

    reward_percentiles: the list that was passed to eth_feeHistory. Extra keys of the
    answer (baseFeePerBlobGas, blobGasUsedRatio) are ignored.
    """
    for key in ("oldestBlock", "baseFeePerGas", "gasUsedRatio", "reward"):
        _require_history(key in raw, key, None, "present in the eth_feeHistory result")
    base_fees = _sequence(raw["baseFeePerGas"], "baseFeePerGas")
    ratios = _sequence(raw["gasUsedRatio"], "gasUsedRatio")
    rows = _sequence(raw["reward"], "reward")
    return FeeHistory(
        oldest_block=_quantity(raw["oldestBlock"], "oldestBlock"),
        base_fee_per_gas_wei=tuple(
            Wei(_quantity(v, f"baseFeePerGas[{i}]")) for i, v in enumerate(base_fees)
        ),
        gas_used_ratio=tuple(_ratio(v, f"gasUsedRatio[{i}]") for i, v in enumerate(ratios)),
        reward_percentiles=tuple(reward_percentiles),
        reward_wei=tuple(
            tuple(
                Wei(_quantity(v, f"reward[{i}][{j}]"))
                for j, v in enumerate(_sequence(row, f"reward[{i}]"))
            )
            for i, row in enumerate(rows)
        ),
    )


def block_has_base_fee(block: Mapping[str, object]) -> bool:
    """True when a block (eth_getBlockByNumber result) carries `baseFeePerGas` (London+)."""
    return block.get("baseFeePerGas") is not None


# --- estimates ----------------------------------------------------------------------------


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _scale_bp_up(value: int, ratio_bp: int) -> int:
    """value x ratio_bp / 10 000, rounded up."""
    return _ceil_div(value * ratio_bp, BP_ONE)


def _upper_median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return _ceil_div(ordered[mid - 1] + ordered[mid], 2)


def priority_fee_per_gas_wei(history: FeeHistory, tier: Tier, policy: FeePolicy) -> Wei:
    """Median of the tier's reward percentile over the blocks that used gas, >= the floor.

    Empty blocks report zero rewards, which say nothing about the market, so they are left
    out; with no non-empty block (a quiet anvil) the floor is the tip.
    """
    percentile = policy.for_tier(tier).reward_percentile
    if percentile not in history.reward_percentiles:
        raise FeeHistoryMalformed(
            "reward_percentiles",
            history.reward_percentiles,
            f"includes the {tier} tier's percentile {percentile}",
        )
    column = history.reward_percentiles.index(percentile)
    rewards = [
        row[column]
        for row, ratio in zip(history.reward_wei, history.gas_used_ratio, strict=True)
        if ratio > 0
    ]
    median = _upper_median(rewards) if rewards else 0
    return Wei(max(median, policy.priority_fee_floor_wei))


def _cap_eip1559(uncapped: Eip1559Fees, cap_wei: Wei | None) -> tuple[Eip1559Fees, bool]:
    if cap_wei is None or uncapped.max_fee_per_gas_wei <= cap_wei:
        return uncapped, False
    # The tip never exceeds the max fee, so it fits under the cap once the max fee does.
    return (
        Eip1559Fees(
            max_fee_per_gas_wei=cap_wei,
            max_priority_fee_per_gas_wei=Wei(min(uncapped.max_priority_fee_per_gas_wei, cap_wei)),
        ),
        True,
    )


def _cap_legacy(uncapped: LegacyFees, cap_wei: Wei | None) -> tuple[LegacyFees, bool]:
    if cap_wei is None or uncapped.gas_price_wei <= cap_wei:
        return uncapped, False
    return LegacyFees(gas_price_wei=cap_wei), True


def estimate_eip1559(history: FeeHistory, tier: Tier, policy: FeePolicy) -> FeeQuote:
    """max fee = next base fee x tier headroom + priority fee; both clamped to the cap."""
    priority_wei = priority_fee_per_gas_wei(history, tier, policy)
    headroom_bp = policy.for_tier(tier).base_fee_headroom_bp
    max_fee_wei = _scale_bp_up(history.next_base_fee_per_gas_wei, headroom_bp) + priority_wei
    uncapped = Eip1559Fees(
        max_fee_per_gas_wei=Wei(max_fee_wei), max_priority_fee_per_gas_wei=priority_wei
    )
    fees, capped = _cap_eip1559(uncapped, policy.fee_cap_wei)
    return FeeQuote(fees=fees, uncapped=uncapped, capped=capped)


def estimate_legacy(gas_price_wei: Wei, tier: Tier, policy: FeePolicy) -> FeeQuote:
    """gas price = eth_gasPrice x tier multiplier, clamped to the cap."""
    if gas_price_wei < 0:
        raise FeesInvalid("gas_price_wei", gas_price_wei, ">= 0 wei")
    multiplier_bp = policy.for_tier(tier).legacy_multiplier_bp
    uncapped = LegacyFees(gas_price_wei=Wei(_scale_bp_up(gas_price_wei, multiplier_bp)))
    fees, capped = _cap_legacy(uncapped, policy.fee_cap_wei)
    return FeeQuote(fees=fees, uncapped=uncapped, capped=capped)


def estimate_fees(
    *,
    latest_block_has_base_fee: bool,
    tier: Tier,
    policy: FeePolicy,
    fee_history: FeeHistory | None = None,
    gas_price_wei: Wei | None = None,
) -> FeeQuote:
    """EIP-1559 from the fee history when the latest block has a base fee, else legacy."""
    if latest_block_has_base_fee:
        if fee_history is None:
            raise FeeInputMissing(
                "fee_history", None, "given when the latest block has baseFeePerGas"
            )
        return estimate_eip1559(fee_history, tier, policy)
    if gas_price_wei is None:
        raise FeeInputMissing(
            "gas_price_wei", None, "given when the latest block has no baseFeePerGas"
        )
    return estimate_legacy(gas_price_wei, tier, policy)


# --- replacement --------------------------------------------------------------------------


def min_replacement_fee_wei(previous_wei: int, policy: FeePolicy) -> Wei:
    """The lowest fee a replacement may carry: previous x (1 + bump), rounded up.

    Rounding up keeps the raise >= 12.5 % for tiny values (1 wei -> 2); a zero fee goes
    to 1 wei so that the replacement is always strictly higher.
    """
    return Wei(
        max(_scale_bp_up(previous_wei, BP_ONE + policy.replacement_bump_bp), previous_wei + 1)
    )


def bump(previous: Fees, policy: FeePolicy, *, fresh_estimate: Fees | None = None) -> Replacement:
    """Fees for a replacement of `previous` (same nonce and payload).

    Each field is the larger of previous + bump (rounded up) and the fresh estimate's, then
    clamped to the cap. If the cap leaves a field below previous + bump the replacement
    would be refused as underpriced, so `fees` is None (`can_replace` is False).
    """
    cap = policy.fee_cap_wei
    if isinstance(previous, Eip1559Fees):
        if fresh_estimate is not None and not isinstance(fresh_estimate, Eip1559Fees):
            raise FeeKindMismatch("fresh_estimate.kind", fresh_estimate.kind, "same as previous")
        min_max_fee = min_replacement_fee_wei(previous.max_fee_per_gas_wei, policy)
        min_priority = min_replacement_fee_wei(previous.max_priority_fee_per_gas_wei, policy)
        fresh_max = fresh_estimate.max_fee_per_gas_wei if fresh_estimate else 0
        fresh_priority = fresh_estimate.max_priority_fee_per_gas_wei if fresh_estimate else 0
        uncapped_1559 = Eip1559Fees(
            max_fee_per_gas_wei=Wei(max(min_max_fee, fresh_max)),
            max_priority_fee_per_gas_wei=Wei(max(min_priority, fresh_priority)),
        )
        fees_1559, capped = _cap_eip1559(uncapped_1559, cap)
        # A field the cap pushed below its minimum would make the replacement underpriced.
        ok = (
            fees_1559.max_fee_per_gas_wei >= min_max_fee
            and fees_1559.max_priority_fee_per_gas_wei >= min_priority
        )
        return Replacement(fees=fees_1559 if ok else None, uncapped=uncapped_1559, capped=capped)
    if fresh_estimate is not None and not isinstance(fresh_estimate, LegacyFees):
        raise FeeKindMismatch("fresh_estimate.kind", fresh_estimate.kind, "same as previous")
    min_price = min_replacement_fee_wei(previous.gas_price_wei, policy)
    fresh_price = fresh_estimate.gas_price_wei if fresh_estimate else 0
    uncapped_legacy = LegacyFees(gas_price_wei=Wei(max(min_price, fresh_price)))
    fees_legacy, capped = _cap_legacy(uncapped_legacy, cap)
    ok = fees_legacy.gas_price_wei >= min_price
    return Replacement(fees=fees_legacy if ok else None, uncapped=uncapped_legacy, capped=capped)
