"""Connecting to an RPC endpoint, and the errors that say what went wrong with it.

Guarantee: a Web3 built here (`web3_for`, `connect`) never lets a transport exception
(requests, urllib3, a socket's OSError) out: its provider raises ChainUnavailable instead,
whose message names the RPC's scheme, host and port only. The transport's own text repeats
the full URL, and RPC URLs carry API keys in the user info, the path or the query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from web3 import HTTPProvider, Web3
from web3.exceptions import ProviderConnectionError
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import RPCEndpoint, RPCResponse

from granular.errors import ChainUnavailable as ChainUnavailable  # its home is granular.errors
from granular.errors import redact_url as redact_url

# What the rest of the code holds for a connected chain; only adapters/chain call into it.
ChainConnection = Web3

# A node that could not be asked: refused, reset, timed out, an HTTP error status (a
# provider's 429 or 503), an unreadable answer from a proxy in between.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    OSError,
    ProviderConnectionError,
)


@contextmanager
def answering(url: str) -> Iterator[None]:
    """Inside: a transport failure becomes ChainUnavailable naming the host of `url`; the
    original (whose text holds the whole URL) is dropped, not chained."""
    try:
        yield
    except TRANSPORT_ERRORS as error:
        raise ChainUnavailable(url, type(error).__name__) from None


class _GuardedHTTPProvider(HTTPProvider):
    """HTTPProvider whose requests raise ChainUnavailable instead of a transport error."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with answering(str(self.endpoint_uri)):
            return super().make_request(method, params)

    def make_batch_request(
        self, batch_requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        with answering(str(self.endpoint_uri)):
            return super().make_batch_request(batch_requests)

    def is_connected(self, show_traceback: bool = False) -> bool:
        """False for a node that cannot be reached, as web3's own provider answers."""
        try:
            return super().is_connected(show_traceback)
        except ChainUnavailable:
            if show_traceback:
                raise
            return False


def web3_for(url: str, *, timeout_s: float = 10.0, retry: bool = True) -> Web3:
    """A Web3 for `url`, without asking the node anything yet.

    `retry=False` turns off web3's own retries (five tries with back-off on a timeout or
    an HTTP error): for a caller that answers someone now, such as an API request, which
    should fail in one timeout and say so rather than wait five."""
    provider = _GuardedHTTPProvider(
        url,
        request_kwargs={"timeout": timeout_s},
        **({} if retry else {"exception_retry_configuration": None}),
    )
    w3 = Web3(provider)
    # Energy Web Chain and other PoA chains put more than 32 bytes in extraData.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def connect(url: str, *, timeout_s: float = 10.0) -> tuple[Web3, int]:
    """A Web3 for `url` and its chain id; raises ChainUnavailable instead of a traceback."""
    w3 = web3_for(url, timeout_s=timeout_s)
    try:
        chain_id = w3.eth.chain_id
    except ChainUnavailable:
        raise
    except Exception as error:  # a node that answers, but not JSON-RPC: no chain there
        raise ChainUnavailable(url, type(error).__name__) from None
    return w3, chain_id
