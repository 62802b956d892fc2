"""Connecting to an RPC endpoint, and the errors that say what went wrong with it."""

from __future__ import annotations

from urllib.parse import urlsplit

from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware

from granular.errors import GranularError

# What the rest of the code holds for a connected chain; only adapters/chain call into it.
ChainConnection = Web3


class ChainUnavailable(GranularError):
    code = "chain_unavailable"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"RPC {redact_url(url)} is unreachable: {reason}")


def redact_url(url: str) -> str:
    """Scheme, host and port only: RPC URLs often carry an API key in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def connect(url: str, *, timeout_s: float = 10.0) -> tuple[Web3, int]:
    """A Web3 for `url` and its chain id; raises ChainUnavailable instead of a traceback."""
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout_s}))
    # Energy Web Chain and other PoA chains put more than 32 bytes in extraData.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    try:
        chain_id = w3.eth.chain_id
    except Exception as error:
        raise ChainUnavailable(url, type(error).__name__) from None
    return w3, chain_id
