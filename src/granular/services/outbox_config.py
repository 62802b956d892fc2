"""The sender's configuration for one chain, built from `config.Settings` and checked once.

`config_from_settings` is the one place it is built (the daemon, `issue-once`, tests): the
per-chain maps pick this chain's value, else the global one; the tier deadlines replace the
default tiers' deadlines. Every bound is checked here and names the setting it breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from granular.config import Settings
from granular.domain.gas import BP_ONE, FeePolicy, Tier, TierPolicy, Wei
from granular.errors import ConfigurationError, FieldRuleError


class OutboxConfigInvalid(FieldRuleError, ConfigurationError):
    code = "outbox_config_invalid"
    subject = "outbox "


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


def _with_deadline(policy: TierPolicy, deadline_s: int | None) -> TierPolicy:
    if deadline_s is None:
        return policy
    return TierPolicy(
        deadline_s=deadline_s,
        reward_percentile=policy.reward_percentile,
        base_fee_headroom_bp=policy.base_fee_headroom_bp,
        legacy_multiplier_bp=policy.legacy_multiplier_bp,
    )


def config_from_settings(settings: Settings, *, chain_id: int) -> OutboxConfig:
    """The sender's configuration for `chain_id` from the typed GRANULAR_* settings."""
    confirmations = settings.confirmations_by_chain.get(chain_id, settings.confirmations)
    cap = settings.fee_cap_wei_by_chain.get(chain_id, settings.fee_cap_wei)
    deadlines = settings.tier_deadlines_s
    default = FeePolicy()
    policy = FeePolicy(
        slow=_with_deadline(default.slow, deadlines.get(Tier.SLOW)),
        standard=_with_deadline(default.standard, deadlines.get(Tier.STANDARD)),
        fast=_with_deadline(default.fast, deadlines.get(Tier.FAST)),
        priority_fee_floor_wei=Wei(settings.priority_fee_floor_wei)
        if settings.priority_fee_floor_wei is not None
        else default.priority_fee_floor_wei,
        fee_cap_wei=Wei(cap) if cap is not None else None,
    )
    return OutboxConfig(
        chain_id=chain_id,
        confirmations=confirmations,
        poll_interval_s=settings.outbox_poll_interval_s,
        fee_policy=policy,
        batch_size=settings.outbox_batch_size,
        lease_ttl_s=settings.outbox_lease_ttl_s,
        backoff_max_s=settings.outbox_backoff_max_s,
    )
