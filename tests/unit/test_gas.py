"""Fee maths (domain/gas.py) on recorded eth_feeHistory samples and generated histories.

The anvil_* fixtures were recorded from anvil 1.7.1 (see each file's "scenario"); the
synthetic_* one is hand-made in the shape of a busy mainnet window.
"""

from __future__ import annotations

import json
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granular.domain.gas import (
    REWARD_PERCENTILES,
    TIERS_SLOW_TO_FAST,
    Eip1559Fees,
    FeeHistory,
    FeeHistoryMalformed,
    FeeInputMissing,
    FeeKind,
    FeeKindMismatch,
    FeePolicy,
    FeePolicyInvalid,
    FeeQuote,
    Fees,
    FeesInvalid,
    LegacyFees,
    Tier,
    TierPolicy,
    Wei,
    block_has_base_fee,
    bump,
    estimate_eip1559,
    estimate_fees,
    estimate_legacy,
    min_replacement_fee_wei,
    parse_fee_history,
    priority_fee_per_gas_wei,
)
from granular.domain.outbox import AttemptFacts, InFlight, RequestState, Verdict, decide
from granular.errors import ConfigurationError, GranularError

FIXTURES = Path(__file__).parent / "fixtures" / "fee_history"
GWEI = 10**9
DEFAULT = FeePolicy()
NO_FLOOR = FeePolicy(priority_fee_floor_wei=Wei(0))


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc


def history_of(name: str) -> FeeHistory:
    doc = load(name)
    return parse_fee_history(doc["response"], reward_percentiles=doc["request"]["params"][2])


LONDON_FIXTURES = [
    "anvil_london_genesis",
    "anvil_london_empty_blocks",
    "anvil_london_varied_tips",
    "anvil_london_raised_base_fee",
    "synthetic_mainnet_busy_rising_base_fee",
]
ALL_FIXTURES = [*LONDON_FIXTURES, "anvil_berlin_legacy"]


def test_fixture_list_is_complete() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(ALL_FIXTURES)


def test_default_percentiles_constant_matches_the_default_policy() -> None:
    assert DEFAULT.reward_percentiles == REWARD_PERCENTILES == (10, 50, 90)
    for name in ALL_FIXTURES:
        assert load(name)["request"]["params"][2] == list(REWARD_PERCENTILES)


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FIXTURES, ids=ALL_FIXTURES)
def test_recorded_fixture_parses_with_one_base_fee_more_than_blocks(name: str) -> None:
    raw = load(name)["response"]
    history = history_of(name)
    assert history.oldest_block == int(raw["oldestBlock"], 16)
    assert len(history.base_fee_per_gas_wei) == len(history.gas_used_ratio) + 1
    assert history.next_base_fee_per_gas_wei == int(raw["baseFeePerGas"][-1], 16)
    assert history.reward_wei[-1] == tuple(int(v, 16) for v in raw["reward"][-1])


def test_parse_reads_hex_and_ratios_exactly() -> None:
    history = history_of("anvil_london_varied_tips")
    assert history.oldest_block == 5
    assert history.next_base_fee_per_gas_wei == 264_523_838
    assert history.gas_used_ratio[2] == Decimal("0.008833333333333334")
    assert history.reward_wei[0] == (100_000_000, 500_000_000, 2_000_000_000)


def test_parse_accepts_web3_style_ints() -> None:
    raw = load("anvil_london_varied_tips")["response"]
    as_ints = {
        "oldestBlock": int(raw["oldestBlock"], 16),
        "baseFeePerGas": [int(v, 16) for v in raw["baseFeePerGas"]],
        "gasUsedRatio": raw["gasUsedRatio"],
        "reward": [[int(v, 16) for v in row] for row in raw["reward"]],
    }
    assert parse_fee_history(as_ints, reward_percentiles=REWARD_PERCENTILES) == history_of(
        "anvil_london_varied_tips"
    )


def _raw_varied(**changes: Any) -> dict[str, Any]:
    raw = dict(load("anvil_london_varied_tips")["response"])
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_raw_varied(baseFeePerGas=["0x1"] * 6), "baseFeePerGas"),
        (_raw_varied(reward=[["0x0", "0x0", "0x0"]] * 5), "reward"),
        (_raw_varied(reward=[["0x0", "0x0"]] * 6), "reward[0]"),
        (_raw_varied(oldestBlock="5"), "oldestBlock"),
        (_raw_varied(oldestBlock="0xzz"), "oldestBlock"),
        (_raw_varied(oldestBlock=True), "oldestBlock"),
        (_raw_varied(gasUsedRatio=[0.1, 0.0, 0.2, 1.5, 0.0, 0.3]), "gasUsedRatio[3]"),
        (_raw_varied(gasUsedRatio=[], baseFeePerGas=["0x1"], reward=[]), "gasUsedRatio"),
        ({k: v for k, v in _raw_varied().items() if k != "reward"}, "reward"),
    ],
    ids=[
        "base-fee-count",
        "reward-rows",
        "reward-width",
        "hex-without-0x",
        "bad-hex",
        "bool",
        "ratio-above-1",
        "no-blocks",
        "reward-missing",
    ],
)
def test_malformed_history_is_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(FeeHistoryMalformed) as caught:
        parse_fee_history(raw, reward_percentiles=REWARD_PERCENTILES)
    assert caught.value.field == field
    assert caught.value.details["field"] == field
    assert caught.value.code == "fee_history_malformed"
    assert isinstance(caught.value, GranularError)
    assert field in str(caught.value)
    assert "breaks the rule" in str(caught.value)


def test_history_without_the_tiers_percentile_is_refused() -> None:
    history = history_of("anvil_london_varied_tips")
    policy = FeePolicy(fast=TierPolicy(30, 95, 20_000, 12_500))
    with pytest.raises(FeeHistoryMalformed, match="percentile 95"):
        estimate_eip1559(history, Tier.FAST, policy)


# --- EIP-1559 estimates on the recorded samples -------------------------------------------

# (fixture, tier, policy, priority fee, max fee) worked out by hand from the fixture files:
# priority = upper median of the tier's column over blocks with gasUsedRatio > 0, >= floor;
# max = ceil(next base fee x headroom) + priority.
EXPECTED_1559 = [
    # varied tips: non-empty blocks 0, 2, 3, 5; next base fee 264 523 838.
    # fast column 2.0/1.5/0.7/2.5 gwei -> (1.5 + 2.0) / 2; the others fall under the floor.
    ("anvil_london_varied_tips", Tier.FAST, DEFAULT, 1_750_000_000, 2_279_047_676),
    ("anvil_london_varied_tips", Tier.STANDARD, DEFAULT, GWEI, 1_396_785_757),
    ("anvil_london_varied_tips", Tier.SLOW, DEFAULT, GWEI, 1_330_654_798),
    # without a floor the medians show; counting the two empty blocks' zeros would give
    # 0.6 and 0.15 gwei instead.
    ("anvil_london_varied_tips", Tier.STANDARD, NO_FLOOR, 850_000_000, 1_246_785_757),
    ("anvil_london_varied_tips", Tier.SLOW, NO_FLOOR, 300_000_000, 630_654_798),
    # raised base fee: the next block's base fee was set to 120 gwei.
    ("anvil_london_raised_base_fee", Tier.FAST, DEFAULT, 2_500_000_000, 242_500_000_000),
    ("anvil_london_raised_base_fee", Tier.STANDARD, DEFAULT, 1_200_000_000, 181_200_000_000),
    ("anvil_london_raised_base_fee", Tier.SLOW, DEFAULT, GWEI, 151_000_000_000),
    # anvil with no transactions: zero rewards everywhere, the floor is the tip.
    ("anvil_london_genesis", Tier.FAST, DEFAULT, GWEI, 3 * GWEI),
    ("anvil_london_empty_blocks", Tier.FAST, DEFAULT, GWEI, 2_172_363_282),
    ("anvil_london_empty_blocks", Tier.SLOW, DEFAULT, GWEI, 1_732_727_052),
    # synthetic busy window: next base fee 65 424 529 834, ten non-empty blocks.
    ("synthetic_mainnet_busy_rising_base_fee", Tier.FAST, DEFAULT, 7_500_000_000, 138_349_059_668),
    (
        "synthetic_mainnet_busy_rising_base_fee",
        Tier.STANDARD,
        DEFAULT,
        1_500_000_000,
        99_636_794_751,
    ),
    ("synthetic_mainnet_busy_rising_base_fee", Tier.SLOW, DEFAULT, GWEI, 82_780_662_293),
    ("synthetic_mainnet_busy_rising_base_fee", Tier.SLOW, NO_FLOOR, 45_000_000, 81_825_662_293),
]


@pytest.mark.parametrize(
    ("name", "tier", "policy", "priority_wei", "max_fee_wei"),
    EXPECTED_1559,
    ids=[
        f"{n.removeprefix('anvil_london_')}-{t}{'-nofloor' if p is NO_FLOOR else ''}"
        for n, t, p, *_ in EXPECTED_1559
    ],
)
def test_eip1559_estimate_on_recorded_history(
    name: str, tier: Tier, policy: FeePolicy, priority_wei: int, max_fee_wei: int
) -> None:
    quote = estimate_eip1559(history_of(name), tier, policy)
    assert quote.fees == Eip1559Fees(
        max_fee_per_gas_wei=Wei(max_fee_wei), max_priority_fee_per_gas_wei=Wei(priority_wei)
    )
    assert quote.capped is False
    assert quote.uncapped == quote.fees


@pytest.mark.parametrize("name", LONDON_FIXTURES, ids=LONDON_FIXTURES)
def test_tip_is_never_below_the_floor_and_max_fee_covers_next_base_fee(name: str) -> None:
    history = history_of(name)
    for tier in TIERS_SLOW_TO_FAST:
        fees = estimate_eip1559(history, tier, DEFAULT).fees
        assert isinstance(fees, Eip1559Fees)
        assert fees.max_priority_fee_per_gas_wei >= DEFAULT.priority_fee_floor_wei
        assert fees.max_fee_per_gas_wei >= (
            history.next_base_fee_per_gas_wei + fees.max_priority_fee_per_gas_wei
        )


@pytest.mark.parametrize("name", ALL_FIXTURES, ids=ALL_FIXTURES)
def test_tiers_are_ordered_on_recorded_history(name: str) -> None:
    history = history_of(name)
    gas_price_wei = Wei(int(load(name)["eth_gasPrice"], 16))
    for policy in (DEFAULT, NO_FLOOR, FeePolicy(fee_cap_wei=Wei(2 * GWEI))):
        assert_ordered([estimate_eip1559(history, t, policy) for t in TIERS_SLOW_TO_FAST])
        assert_ordered([estimate_legacy(gas_price_wei, t, policy) for t in TIERS_SLOW_TO_FAST])


def assert_ordered(quotes: list[FeeQuote]) -> None:
    fields = [sorted(q.fees.to_tx_params().items()) for q in quotes]
    for slower, faster in pairwise(fields):
        for (key, low), (_, high) in zip(slower, faster, strict=True):
            assert low <= high, (key, fields)


# --- EIP-1559 or legacy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("anvil_london_varied_tips", FeeKind.EIP1559),
        ("anvil_london_genesis", FeeKind.EIP1559),
        ("anvil_berlin_legacy", FeeKind.LEGACY),
    ],
    ids=["london-varied-tips", "london-genesis", "berlin"],
)
def test_latest_block_decides_eip1559_or_legacy(name: str, kind: FeeKind) -> None:
    doc = load(name)
    has_base_fee = block_has_base_fee(doc["latest_block"])
    quote = estimate_fees(
        latest_block_has_base_fee=has_base_fee,
        tier=Tier.STANDARD,
        policy=DEFAULT,
        fee_history=history_of(name),
        gas_price_wei=Wei(int(doc["eth_gasPrice"], 16)),
    )
    assert has_base_fee is (kind is FeeKind.EIP1559)
    assert quote.fees.kind is kind


def test_berlin_uses_gas_price_times_tier_multiplier() -> None:
    # anvil --hardfork berlin answers eth_gasPrice 1.875 gwei (and feeHistory base fees of 0)
    gas_price_wei = Wei(int(load("anvil_berlin_legacy")["eth_gasPrice"], 16))
    assert gas_price_wei == 1_875_000_000
    got = {t: estimate_legacy(gas_price_wei, t, DEFAULT).fees for t in TIERS_SLOW_TO_FAST}
    assert got == {
        Tier.SLOW: LegacyFees(Wei(1_875_000_000)),
        Tier.STANDARD: LegacyFees(Wei(2_062_500_000)),
        Tier.FAST: LegacyFees(Wei(2_343_750_000)),
    }


def test_legacy_multiplier_rounds_up() -> None:
    assert estimate_legacy(Wei(3), Tier.STANDARD, DEFAULT).fees == LegacyFees(Wei(4))  # 3.3


@pytest.mark.parametrize("has_base_fee", [True, False], ids=["eip1559", "legacy"])
def test_missing_input_for_the_chain_type_is_refused(has_base_fee: bool) -> None:
    with pytest.raises(FeeInputMissing) as caught:
        estimate_fees(latest_block_has_base_fee=has_base_fee, tier=Tier.FAST, policy=DEFAULT)
    assert caught.value.code == "fee_input_missing"


def test_block_has_base_fee() -> None:
    assert block_has_base_fee({"number": 1, "baseFeePerGas": 7}) is True
    assert block_has_base_fee({"number": 1, "baseFeePerGas": "0x0"}) is True
    assert block_has_base_fee({"number": 1}) is False
    assert block_has_base_fee({"number": 1, "baseFeePerGas": None}) is False


def test_fees_map_to_transaction_keys() -> None:
    assert Eip1559Fees(Wei(9), Wei(2)).to_tx_params() == {
        "maxFeePerGas": 9,
        "maxPriorityFeePerGas": 2,
    }
    assert LegacyFees(Wei(5)).to_tx_params() == {"gasPrice": 5}


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Eip1559Fees(Wei(1), Wei(2)), "max_priority_fee_per_gas_wei"),
        (lambda: Eip1559Fees(Wei(-1), Wei(0)), "max_fee_per_gas_wei"),
        (lambda: LegacyFees(Wei(-1)), "gas_price_wei"),
        (lambda: estimate_legacy(Wei(-1), Tier.FAST, DEFAULT), "gas_price_wei"),
    ],
    ids=["tip-above-max", "negative-max", "negative-price", "negative-node-price"],
)
def test_unsendable_fees_are_refused(build: Any, field: str) -> None:
    with pytest.raises(FeesInvalid) as caught:
        build()
    assert caught.value.field == field
    assert field in str(caught.value)


# --- the cap ------------------------------------------------------------------------------


def test_cap_clamps_both_fields_and_reports_it() -> None:
    # raised base fee, fast: wants 242.5 gwei max and a 2.5 gwei tip
    policy = FeePolicy(fee_cap_wei=Wei(100 * GWEI))
    quote = estimate_eip1559(history_of("anvil_london_raised_base_fee"), Tier.FAST, policy)
    assert quote.capped is True
    assert quote.fees == Eip1559Fees(Wei(100 * GWEI), Wei(2_500_000_000))
    assert quote.uncapped == Eip1559Fees(Wei(242_500_000_000), Wei(2_500_000_000))

    tiny = FeePolicy(fee_cap_wei=Wei(GWEI // 2))  # below the 1 gwei floor: the cap wins
    quote = estimate_eip1559(history_of("anvil_london_genesis"), Tier.SLOW, tiny)
    assert quote.fees == Eip1559Fees(Wei(GWEI // 2), Wei(GWEI // 2))
    assert quote.capped is True


@pytest.mark.parametrize(
    ("cap_wei", "capped", "max_fee_wei"),
    [(3 * GWEI, False, 3 * GWEI), (3 * GWEI - 1, True, 3 * GWEI - 1)],
    ids=["cap-equal-to-estimate", "cap-1-wei-below"],
)
def test_cap_edge(cap_wei: int, capped: bool, max_fee_wei: int) -> None:
    # genesis, fast: exactly 3 gwei wanted
    policy = FeePolicy(fee_cap_wei=Wei(cap_wei))
    quote = estimate_eip1559(history_of("anvil_london_genesis"), Tier.FAST, policy)
    assert quote.capped is capped
    assert isinstance(quote.fees, Eip1559Fees)
    assert quote.fees.max_fee_per_gas_wei == max_fee_wei


def test_legacy_cap() -> None:
    policy = FeePolicy(fee_cap_wei=Wei(2 * GWEI))
    quote = estimate_legacy(Wei(1_875_000_000), Tier.FAST, policy)
    assert quote.fees == LegacyFees(Wei(2 * GWEI))
    assert quote.capped is True
    assert estimate_legacy(Wei(1_875_000_000), Tier.SLOW, policy).capped is False


# --- replacement --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "minimum"),
    [(0, 1), (1, 2), (7, 8), (8, 9), (9, 11), (16, 18), (GWEI, 1_125_000_000)],
    ids=["0-to-1", "1-to-2", "7-to-8", "8-to-9-exact", "9-to-11-ceil", "16-to-18", "1gwei"],
)
def test_bump_raises_both_fields_by_at_least_12_5_percent_rounding_up(
    previous: int, minimum: int
) -> None:
    assert min_replacement_fee_wei(previous, DEFAULT) == minimum
    rep = bump(Eip1559Fees(Wei(previous), Wei(previous)), DEFAULT)
    assert rep.fees == Eip1559Fees(Wei(minimum), Wei(minimum))
    assert rep.can_replace and not rep.capped
    assert bump(LegacyFees(Wei(previous)), DEFAULT).fees == LegacyFees(Wei(minimum))


def test_bump_takes_the_fresh_estimate_field_by_field() -> None:
    previous = Eip1559Fees(Wei(80 * GWEI), Wei(2 * GWEI))
    fresh = Eip1559Fees(Wei(85 * GWEI), Wei(5 * GWEI))  # higher tip, max fee below +12.5 %
    rep = bump(previous, DEFAULT, fresh_estimate=fresh)
    assert rep.fees == Eip1559Fees(Wei(90 * GWEI), Wei(5 * GWEI))
    fresh_legacy = LegacyFees(Wei(30))
    assert bump(LegacyFees(Wei(20)), DEFAULT, fresh_estimate=fresh_legacy).fees == fresh_legacy


@pytest.mark.parametrize(
    ("cap_wei", "fees", "capped"),
    [
        (9, Eip1559Fees(Wei(9), Wei(3)), False),  # exactly +12.5 % fits
        (10, Eip1559Fees(Wei(10), Wei(3)), True),  # fresh asked 12, clamped, still >= 9
        (8, None, True),  # at the cap already: no replacement
    ],
    ids=["cap-at-minimum", "cap-between", "cap-at-previous"],
)
def test_bump_at_the_cap(cap_wei: int, fees: Fees | None, capped: bool) -> None:
    previous = Eip1559Fees(Wei(8), Wei(2))
    fresh = Eip1559Fees(Wei(12), Wei(1)) if cap_wei == 10 else None
    rep = bump(previous, FeePolicy(fee_cap_wei=Wei(cap_wei)), fresh_estimate=fresh)
    assert rep.fees == fees
    assert rep.can_replace is (fees is not None)
    assert rep.capped is capped


def test_bump_refuses_when_the_cap_leaves_less_than_12_5_percent() -> None:
    policy = FeePolicy(fee_cap_wei=Wei(100 * GWEI))
    previous = Eip1559Fees(Wei(95 * GWEI), Wei(3 * GWEI))
    rep = bump(previous, policy)
    assert rep.can_replace is False
    assert rep.capped is True
    assert rep.uncapped == Eip1559Fees(Wei(106_875_000_000), Wei(3_375_000_000))
    legacy = bump(LegacyFees(Wei(95 * GWEI)), policy)
    assert legacy.can_replace is False and legacy.capped is True


def test_bump_refuses_to_mix_kinds() -> None:
    with pytest.raises(FeeKindMismatch):
        bump(LegacyFees(Wei(1)), DEFAULT, fresh_estimate=Eip1559Fees(Wei(2), Wei(1)))
    with pytest.raises(FeeKindMismatch):
        bump(Eip1559Fees(Wei(2), Wei(1)), DEFAULT, fresh_estimate=LegacyFees(Wei(1)))


def test_a_larger_configured_bump_is_used() -> None:
    policy = FeePolicy(replacement_bump_bp=2_000)
    assert bump(LegacyFees(Wei(10)), policy).fees == LegacyFees(Wei(12))


# --- deadlines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "deadline_s"),
    [(Tier.FAST, 30), (Tier.STANDARD, 300), (Tier.SLOW, 1_800)],
    ids=["fast-30s", "standard-5min", "slow-30min"],
)
def test_replacement_is_due_exactly_at_the_deadline(tier: Tier, deadline_s: int) -> None:
    sent_at_s = 1_700_000_000
    assert DEFAULT.for_tier(tier).deadline_s == deadline_s

    def verdict(now_s: int) -> Verdict:
        request = InFlight(RequestState.SENT, None, None, (AttemptFacts("0xaa", sent_at_s),))
        return decide(
            request,
            receipt=None,
            head_block=1,
            confirmations=1,
            now_s=now_s,
            deadline_s=DEFAULT.for_tier(tier).deadline_s,
            resume=False,
            in_pool={"0xaa": True},
        ).verdict

    assert verdict(sent_at_s + deadline_s) is Verdict.REPLACE
    assert verdict(sent_at_s + deadline_s - 1) is Verdict.NOTHING
    assert verdict(sent_at_s - 5) is Verdict.NOTHING  # a clock that went back


# --- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"replacement_bump_bp": 1_249}, "replacement_bump_bp"),
        ({"fee_cap_wei": 0}, "fee_cap_wei"),
        ({"priority_fee_floor_wei": -1}, "priority_fee_floor_wei"),
        ({"fast": TierPolicy(30, 101, 20_000, 12_500)}, "fast.reward_percentile"),
        ({"fast": TierPolicy(30, 40, 20_000, 12_500)}, "fast.reward_percentile"),
        ({"standard": TierPolicy(300, 50, 9_999, 11_000)}, "standard.base_fee_headroom_bp"),
        ({"standard": TierPolicy(300, 50, 25_000, 11_000)}, "fast.base_fee_headroom_bp"),
        ({"slow": TierPolicy(1_800, 10, 12_500, 12_000)}, "standard.legacy_multiplier_bp"),
        ({"slow": TierPolicy(200, 10, 12_500, 10_000)}, "standard.deadline_s"),
        ({"fast": TierPolicy(0, 90, 20_000, 12_500)}, "fast.deadline_s"),
    ],
    ids=[
        "bump-below-12.5%",
        "zero-cap",
        "negative-floor",
        "percentile-over-100",
        "fast-percentile-below-standard",
        "headroom-below-1x",
        "standard-headroom-above-fast",
        "slow-multiplier-above-standard",
        "slow-deadline-shorter",
        "zero-deadline",
    ],
)
def test_invalid_policy_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(FeePolicyInvalid) as caught:
        FeePolicy(**changes)
    assert caught.value.field == field
    assert caught.value.code == "fee_policy_invalid"
    assert isinstance(caught.value, ConfigurationError)
    assert field in str(caught.value)


# --- properties ---------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> FeePolicy:
    def ordered(lo: int, hi: int) -> list[int]:
        return sorted(draw(st.lists(st.integers(lo, hi), min_size=3, max_size=3)))

    percentiles = ordered(0, 100)
    headrooms = ordered(10_000, 40_000)
    multipliers = ordered(10_000, 30_000)
    deadlines = ordered(1, 3_600)[::-1]
    tiers = [
        TierPolicy(deadlines[i], percentiles[i], headrooms[i], multipliers[i]) for i in range(3)
    ]
    return FeePolicy(
        slow=tiers[0],
        standard=tiers[1],
        fast=tiers[2],
        priority_fee_floor_wei=Wei(draw(st.integers(0, 5 * GWEI))),
        fee_cap_wei=draw(st.none() | st.integers(1, 500 * GWEI).map(Wei)),
        replacement_bump_bp=draw(st.integers(1_250, 5_000)),
    )


@st.composite
def histories(draw: st.DrawFn, percentiles: tuple[int, ...]) -> FeeHistory:
    blocks = draw(st.integers(1, 12))
    wei = st.integers(0, 300 * GWEI).map(Wei)
    ratio = st.sampled_from([Decimal(0), Decimal(1)]) | st.decimals(0, 1, places=6)
    rows = [
        tuple(sorted(draw(st.lists(wei, min_size=len(percentiles), max_size=len(percentiles)))))
        for _ in range(blocks)
    ]
    return FeeHistory(
        oldest_block=draw(st.integers(0, 10**8)),
        base_fee_per_gas_wei=tuple(draw(wei) for _ in range(blocks + 1)),
        gas_used_ratio=tuple(draw(ratio) for _ in range(blocks)),
        reward_percentiles=percentiles,
        reward_wei=tuple(rows),
    )


@st.composite
def policy_and_history(draw: st.DrawFn) -> tuple[FeePolicy, FeeHistory]:
    policy = draw(policies())
    return policy, draw(histories(policy.reward_percentiles))


@given(policy_and_history())
def test_tiers_are_ordered_and_cap_is_never_exceeded_on_any_history(
    case: tuple[FeePolicy, FeeHistory],
) -> None:
    policy, history = case
    quotes = [estimate_eip1559(history, t, policy) for t in TIERS_SLOW_TO_FAST]
    assert_ordered(quotes)
    for tier, quote in zip(TIERS_SLOW_TO_FAST, quotes, strict=True):
        fees = quote.fees
        assert isinstance(fees, Eip1559Fees)
        assert fees.max_priority_fee_per_gas_wei <= fees.max_fee_per_gas_wei
        if policy.fee_cap_wei is not None:
            assert fees.max_fee_per_gas_wei <= policy.fee_cap_wei
        assert quote.capped is (quote.fees != quote.uncapped)
        if not quote.capped:
            floor = policy.priority_fee_floor_wei
            assert fees.max_priority_fee_per_gas_wei >= floor
            assert fees.max_priority_fee_per_gas_wei == priority_fee_per_gas_wei(
                history, tier, policy
            )


@given(policies(), st.integers(0, 300 * GWEI))
def test_legacy_tiers_are_ordered_and_capped(policy: FeePolicy, gas_price_wei: int) -> None:
    quotes = [estimate_legacy(Wei(gas_price_wei), t, policy) for t in TIERS_SLOW_TO_FAST]
    assert_ordered(quotes)
    for quote in quotes:
        assert isinstance(quote.fees, LegacyFees)
        assert quote.fees.gas_price_wei >= min(gas_price_wei, policy.fee_cap_wei or gas_price_wei)
        if policy.fee_cap_wei is not None:
            assert quote.fees.gas_price_wei <= policy.fee_cap_wei


eip1559_fees = st.tuples(st.integers(0, 300 * GWEI), st.integers(0, 300 * GWEI)).map(
    lambda pair: Eip1559Fees(Wei(max(pair)), Wei(min(pair)))
)


@given(policies(), eip1559_fees, st.none() | eip1559_fees)
def test_bump_is_at_least_12_5_percent_and_never_over_the_cap(
    policy: FeePolicy, previous: Eip1559Fees, fresh: Eip1559Fees | None
) -> None:
    rep = bump(previous, policy, fresh_estimate=fresh)
    cap = policy.fee_cap_wei
    if rep.fees is None:
        assert rep.capped is True
        assert cap is not None
        assert cap < min_replacement_fee_wei(previous.max_fee_per_gas_wei, policy)
        return
    assert isinstance(rep.fees, Eip1559Fees)
    pairs = [
        (previous.max_fee_per_gas_wei, rep.fees.max_fee_per_gas_wei),
        (previous.max_priority_fee_per_gas_wei, rep.fees.max_priority_fee_per_gas_wei),
    ]
    for old, new in pairs:
        assert new > old
        assert new * 10_000 >= old * (10_000 + policy.replacement_bump_bp)
        if cap is not None:
            assert new <= cap
    if fresh is None and not rep.capped and previous.max_fee_per_gas_wei > 0:
        # rounded up, not more: one wei less would be under the bump
        new_max = rep.fees.max_fee_per_gas_wei
        assert (new_max - 1) * 10_000 < previous.max_fee_per_gas_wei * (
            10_000 + policy.replacement_bump_bp
        )


@given(policies(), st.integers(0, 300 * GWEI), st.none() | st.integers(0, 300 * GWEI))
def test_legacy_bump_is_at_least_12_5_percent_and_never_over_the_cap(
    policy: FeePolicy, previous_wei: int, fresh_wei: int | None
) -> None:
    fresh = None if fresh_wei is None else LegacyFees(Wei(fresh_wei))
    rep = bump(LegacyFees(Wei(previous_wei)), policy, fresh_estimate=fresh)
    if rep.fees is None:
        assert rep.capped and policy.fee_cap_wei is not None
        assert policy.fee_cap_wei < min_replacement_fee_wei(previous_wei, policy)
        return
    assert isinstance(rep.fees, LegacyFees)
    assert rep.fees.gas_price_wei * 10_000 >= previous_wei * (10_000 + policy.replacement_bump_bp)
    if policy.fee_cap_wei is not None:
        assert rep.fees.gas_price_wei <= policy.fee_cap_wei
