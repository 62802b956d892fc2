"""Configuration: one Settings object, read from GRANULAR_* variables in the entry point."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    api_key_pepper: SecretStr | None = None
    var_dir: Path = Path("var")
