"""Configuration: one Settings object, read from GRANULAR_* variables in the entry point."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, NonNegativeInt, PositiveInt, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from granular.domain.energy import MaxEnergyPolicy, MaxEnergyRule
from granular.domain.gas import Tier
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
    index_interval_s: float = Field(default=2.0, gt=0, description="registry mirror, every")
    match_interval_s: float = Field(default=10.0, gt=0, description="matching claims, every")
    match_batch_size: int = Field(default=200, ge=1, description="claims per claimBatch tx")
    examples: bool = Field(default=True, description="embedded run: load examples/ once")
    # The transaction outbox: services.outbox.config_from_settings(settings, chain_id=...).
    # Per-chain maps and tier deadlines are written "key=value,..." (README).
    confirmations: int = Field(default=1, ge=0, description="depth at which a tx is confirmed")
    confirmations_by_chain: Annotated[dict[int, NonNegativeInt], NoDecode] = Field(
        default_factory=dict, description='per chain id, e.g. "246=20,73799=5"'
    )
    fee_cap_wei: int | None = Field(default=None, ge=1, description="max fee per gas, never passed")
    fee_cap_wei_by_chain: Annotated[dict[int, PositiveInt], NoDecode] = Field(
        default_factory=dict, description='per chain id, e.g. "246=500000000000"'
    )
    tier_deadlines_s: Annotated[dict[Tier, PositiveInt], NoDecode] = Field(
        default_factory=dict, description='e.g. "fast=30,standard=300,slow=1800"'
    )
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

    @field_validator(
        "confirmations_by_chain", "fee_cap_wei_by_chain", "tier_deadlines_s", mode="before"
    )
    @classmethod
    def _pairs(cls, value: object, info: ValidationInfo) -> object:
        """ "a=1,b=2" (also "a:1") into a mapping; blanks ignored. Values are typed after."""
        if not isinstance(value, str):
            return value
        variable = f"GRANULAR_{(info.field_name or '').upper()}"
        out: dict[str, str] = {}
        for part in value.split(","):
            if not part.strip():
                continue
            sep = "=" if "=" in part else ":"
            key, _, item = part.partition(sep)
            if not key.strip() or not item.strip():
                raise ValueError(f"{variable}={value!r}: expected comma-separated key=value pairs")
            out[key.strip().lower()] = item.strip()
        return out

    def max_energy_policy(self) -> MaxEnergyPolicy:
        """The configured policy; a bad value raises a ConfigurationError naming it."""
        return MaxEnergyPolicy(
            name=self.max_energy_rule,
            default_yield_kwh_per_kw_year=self.max_energy_default_yield_kwh_per_kw_year,
            degradation_per_year=self.max_energy_degradation_per_year,
            margin=self.max_energy_margin,
        )
