"""Configuration: one Settings object, read from GRANULAR_* variables in the entry point."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from granular.domain.energy import MaxEnergyPolicy, MaxEnergyRule


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
    keystore: Path | None = Field(default=None, description="eth-account keystore of the issuer")
    password_file: Path | None = None
    confirmations: int = Field(default=1, ge=0, description="depth at which a tx is confirmed")
    var_dir: Path = Path("var")

    # Max-energy plausibility of meter reads (DESIGN.md §4): "drec" or "physical".
    max_energy_rule: MaxEnergyRule = MaxEnergyRule.DREC
    max_energy_default_yield_kwh_per_kw_year: Decimal = Decimal(1500)
    max_energy_degradation_per_year: Decimal = Decimal("0.005")
    max_energy_margin: Decimal = Decimal("0.2")

    def max_energy_policy(self) -> MaxEnergyPolicy:
        """The configured policy; a bad value raises a ConfigurationError naming it."""
        return MaxEnergyPolicy(
            name=self.max_energy_rule,
            default_yield_kwh_per_kw_year=self.max_energy_default_yield_kwh_per_kw_year,
            degradation_per_year=self.max_energy_degradation_per_year,
            margin=self.max_energy_margin,
        )
