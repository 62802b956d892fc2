"""Configuration: one Settings object, read from GRANULAR_* variables in the entry point."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from granular.domain.energy import MaxEnergyPolicy, MaxEnergyRule
from granular.paths import deployments_dir


class Settings(BaseSettings):
    """Built once by the entry point and passed down; never created at import time."""

    model_config = SettingsConfigDict(env_prefix="GRANULAR_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/granular.db",
        description="SQLAlchemy URL; PostgreSQL in production",
    )
    rpc_url: str | None = Field(
        default=None, description="EVM JSON-RPC endpoint; unset: an embedded anvil"
    )
    network: str = Field(default="local", description="names deployments/<network>.json")
    deployments_dir: Path | None = Field(
        default=None, description="where deployment records live; unset: <checkout>/deployments"
    )
    keystore: Path | None = Field(default=None, description="eth-account keystore of the issuer")
    password_file: Path | None = None
    deployer_keystore: Path | None = Field(default=None, description="`granular deploy`'s key")
    deployer_password_file: Path | None = None
    # The daemon (`granular run`) and the API it serves beside it.
    api_host: str = Field(default="127.0.0.1", description="where `granular run` serves the API")
    api_port: int = Field(default=8000, ge=0, le=65535, description="0: any free port")
    anvil_port: int = Field(default=0, ge=0, le=65535, description="embedded anvil; 0: free")
    grace_s: int = Field(default=300, ge=0, description="a window is due at its end + grace")
    issuance_batch_size: int = Field(default=100, ge=1, description="items per issueBatch tx")
    catch_up_interval_s: float = Field(default=60.0, gt=0, description="late reads, every ...")
    settle_interval_s: float = Field(default=2.0, gt=0, description="confirmed batches, every")
    lifecycle_interval_s: float = Field(default=60.0, gt=0, description="reservations, every")
    examples: bool = Field(default=True, description="embedded run: load examples/ once")
    # The transaction outbox: OutboxConfig.from_env(settings.outbox_settings(), chain_id=...).
    confirmations: int = Field(default=1, ge=0, description="depth at which a tx is confirmed")
    confirmations_by_chain: str = Field(default="", description='e.g. "246=20,73799=5"')
    fee_cap_wei: int | None = Field(default=None, ge=1, description="max fee per gas, never passed")
    fee_cap_wei_by_chain: str = Field(default="", description='e.g. "246=500000000000"')
    tier_deadlines_s: str = Field(default="", description='e.g. "fast=30,standard=300,slow=1800"')
    priority_fee_floor_wei: int | None = Field(default=None, ge=0)
    outbox_poll_interval_s: float = Field(default=1.0, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1)
    outbox_lease_ttl_s: float = Field(default=60.0, gt=0)
    outbox_backoff_max_s: float = Field(default=30.0, gt=0)
    var_dir: Path = Field(default=Path("var"), description="embedded state: anvil, keys")

    def deployments_path(self) -> Path:
        """deployments/<network>.json, the one record every command reads."""
        return (self.deployments_dir or deployments_dir()) / f"{self.network}.json"

    # Max-energy plausibility of meter reads (DESIGN.md §4): "drec" or "physical".
    max_energy_rule: MaxEnergyRule = MaxEnergyRule.DREC
    max_energy_default_yield_kwh_per_kw_year: Decimal = Decimal(1500)
    max_energy_degradation_per_year: Decimal = Decimal("0.005")
    max_energy_margin: Decimal = Decimal("0.2")

    def outbox_settings(self) -> dict[str, str]:
        """The outbox settings under their GRANULAR_* names, the form OutboxConfig.from_env
        parses (per-chain maps and tier deadlines included); unset ones are left out."""
        values: dict[str, object] = {
            "GRANULAR_CONFIRMATIONS": self.confirmations,
            "GRANULAR_CONFIRMATIONS_BY_CHAIN": self.confirmations_by_chain,
            "GRANULAR_FEE_CAP_WEI": self.fee_cap_wei,
            "GRANULAR_FEE_CAP_WEI_BY_CHAIN": self.fee_cap_wei_by_chain,
            "GRANULAR_TIER_DEADLINES_S": self.tier_deadlines_s,
            "GRANULAR_PRIORITY_FEE_FLOOR_WEI": self.priority_fee_floor_wei,
            "GRANULAR_OUTBOX_POLL_INTERVAL_S": self.outbox_poll_interval_s,
            "GRANULAR_OUTBOX_BATCH_SIZE": self.outbox_batch_size,
            "GRANULAR_OUTBOX_LEASE_TTL_S": self.outbox_lease_ttl_s,
            "GRANULAR_OUTBOX_BACKOFF_MAX_S": self.outbox_backoff_max_s,
        }
        return {name: str(value) for name, value in values.items() if value not in (None, "")}

    def max_energy_policy(self) -> MaxEnergyPolicy:
        """The configured policy; a bad value raises a ConfigurationError naming it."""
        return MaxEnergyPolicy(
            name=self.max_energy_rule,
            default_yield_kwh_per_kw_year=self.max_energy_default_yield_kwh_per_kw_year,
            degradation_per_year=self.max_energy_degradation_per_year,
            margin=self.max_energy_margin,
        )
