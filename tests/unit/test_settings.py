"""config.Settings is the one place GRANULAR_* variables are read and typed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from granular.adapters.chain.outbox import ENV_SETTINGS, OutboxConfig
from granular.config import Settings
from granular.domain.gas import Tier


def test_every_outbox_variable_has_a_typed_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "GRANULAR_CONFIRMATIONS": "3",
        "GRANULAR_CONFIRMATIONS_BY_CHAIN": "246=20,73799=5",
        "GRANULAR_FEE_CAP_WEI": "900000000000",
        "GRANULAR_FEE_CAP_WEI_BY_CHAIN": "246=500000000000",
        "GRANULAR_TIER_DEADLINES_S": "fast=20,standard=200,slow=2000",
        "GRANULAR_PRIORITY_FEE_FLOOR_WEI": "2000000000",
        "GRANULAR_OUTBOX_POLL_INTERVAL_S": "0.5",
        "GRANULAR_OUTBOX_BATCH_SIZE": "50",
        "GRANULAR_OUTBOX_LEASE_TTL_S": "30",
        "GRANULAR_OUTBOX_BACKOFF_MAX_S": "10",
    }
    assert set(values) == set(ENV_SETTINGS)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    on_ewc = OutboxConfig.from_env(settings.outbox_settings(), chain_id=246)
    assert on_ewc.confirmations == 20
    assert on_ewc.fee_policy.fee_cap_wei == 500_000_000_000
    elsewhere = OutboxConfig.from_env(settings.outbox_settings(), chain_id=1)
    assert elsewhere.confirmations == 3
    assert elsewhere.fee_policy.fee_cap_wei == 900_000_000_000
    assert elsewhere.fee_policy.for_tier(Tier.FAST).deadline_s == 20
    assert elsewhere.fee_policy.priority_fee_floor_wei == 2_000_000_000
    assert (elsewhere.poll_interval_s, elsewhere.batch_size) == (0.5, 50)
    assert (elsewhere.lease_ttl_s, elsewhere.backoff_max_s) == (30.0, 10.0)


def test_defaults_give_the_outbox_its_own_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    from_settings = OutboxConfig.from_env(Settings().outbox_settings(), chain_id=31337)
    assert from_settings == OutboxConfig.from_env({}, chain_id=31337)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRANULAR_OUTBOX_BATCH_SIZE", "many")
    with pytest.raises(ValidationError, match="outbox_batch_size"):
        Settings()
