"""config.Settings is the one place GRANULAR_* variables are read and typed; the outbox's
configuration is built from it directly (services.outbox.config_from_settings)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from granular.config import Settings
from granular.domain.gas import FeePolicy, Tier
from granular.services.outbox import OutboxConfig, config_from_settings

OUTBOX_VARIABLES = {
    "GRANULAR_CONFIRMATIONS": "3",
    "GRANULAR_CONFIRMATIONS_BY_CHAIN": "246=20, 73799=5",
    "GRANULAR_FEE_CAP_WEI": "900000000000",
    "GRANULAR_FEE_CAP_WEI_BY_CHAIN": "246=500000000000",
    "GRANULAR_TIER_DEADLINES_S": "fast=20,standard=200,slow=2000",
    "GRANULAR_PRIORITY_FEE_FLOOR_WEI": "2000000000",
    "GRANULAR_OUTBOX_POLL_INTERVAL_S": "0.5",
    "GRANULAR_OUTBOX_BATCH_SIZE": "50",
    "GRANULAR_OUTBOX_LEASE_TTL_S": "30",
    "GRANULAR_OUTBOX_BACKOFF_MAX_S": "10",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OUTBOX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_outbox_variable_reaches_the_config(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in OUTBOX_VARIABLES.items():
        clean_env.setenv(name, value)
    settings = Settings()
    on_ewc = config_from_settings(settings, chain_id=246)
    assert on_ewc.confirmations == 20
    assert on_ewc.fee_policy.fee_cap_wei == 500_000_000_000
    assert config_from_settings(settings, chain_id=73799).confirmations == 5
    elsewhere = config_from_settings(settings, chain_id=1)
    assert elsewhere.confirmations == 3
    assert elsewhere.fee_policy.fee_cap_wei == 900_000_000_000
    assert elsewhere.fee_policy.for_tier(Tier.FAST).deadline_s == 20
    assert elsewhere.fee_policy.for_tier(Tier.STANDARD).deadline_s == 200
    assert elsewhere.fee_policy.for_tier(Tier.SLOW).deadline_s == 2000
    assert elsewhere.fee_policy.priority_fee_floor_wei == 2_000_000_000
    assert (elsewhere.poll_interval_s, elsewhere.batch_size) == (0.5, 50)
    assert (elsewhere.lease_ttl_s, elsewhere.backoff_max_s) == (30.0, 10.0)


def test_defaults_give_the_outbox_its_own_defaults(clean_env: pytest.MonkeyPatch) -> None:
    assert config_from_settings(Settings(), chain_id=31337) == OutboxConfig(chain_id=31337)
    assert OutboxConfig(chain_id=31337).fee_policy == FeePolicy()


def test_one_tier_deadline_changes_only_that_tier(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GRANULAR_TIER_DEADLINES_S", "fast=10")
    policy = config_from_settings(Settings(), chain_id=1).fee_policy
    assert policy.fast.deadline_s == 10
    assert policy.standard == FeePolicy().standard and policy.slow == FeePolicy().slow


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("GRANULAR_OUTBOX_BATCH_SIZE", "many", "outbox_batch_size"),
        ("GRANULAR_CONFIRMATIONS", "-1", "confirmations"),
        ("GRANULAR_CONFIRMATIONS_BY_CHAIN", "246", "GRANULAR_CONFIRMATIONS_BY_CHAIN"),
        ("GRANULAR_CONFIRMATIONS_BY_CHAIN", "246=-1", "confirmations_by_chain"),
        ("GRANULAR_CONFIRMATIONS_BY_CHAIN", "ewc=20", "confirmations_by_chain"),
        ("GRANULAR_FEE_CAP_WEI_BY_CHAIN", "246=0", "fee_cap_wei_by_chain"),
        ("GRANULAR_TIER_DEADLINES_S", "urgent=5", "tier_deadlines_s"),
        ("GRANULAR_TIER_DEADLINES_S", "fast=soon", "tier_deadlines_s"),
        ("GRANULAR_OUTBOX_POLL_INTERVAL_S", "0", "outbox_poll_interval_s"),
    ],
    ids=[
        "batch not a number",
        "negative K",
        "no value",
        "negative K on a chain",
        "chain not a number",
        "zero cap",
        "unknown tier",
        "deadline not a number",
        "zero poll interval",
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ValidationError, match=named) as raised:
        Settings()
    assert raised.value.error_count() == 1


def test_tier_deadlines_out_of_order_are_refused_when_the_config_is_built(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("GRANULAR_TIER_DEADLINES_S", "fast=600")  # slower than standard
    with pytest.raises(Exception, match="deadline") as raised:
        config_from_settings(Settings(), chain_id=1)
    assert getattr(raised.value, "code", None) == "fee_policy_invalid"
