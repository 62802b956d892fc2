"""ChainUnavailable names the RPC by scheme, host and port only, whatever the URL carries,
and the API's one status table answers it with 503."""

from __future__ import annotations

import pytest

from granular.adapters.chain.client import ChainUnavailable as FromClient
from granular.api.errors import status_of
from granular.errors import ChainUnavailable, redact_url


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("https://user:pw@rpc.example.org/v3/key?apikey=key#frag", "https://rpc.example.org"),
        ("https://rpc.example.org:8443/key", "https://rpc.example.org:8443"),
        ("http://[::1]:8545/key", "http://[::1]:8545"),
        ("http://host:notaport/key", "?"),
        ("not a url", "?://?"),
    ],
    ids=["plain", "credentials-path-query", "port-path", "ipv6", "bad-port", "no-url"],
)
def test_redact_url_keeps_scheme_host_and_port_only(url: str, named: str) -> None:
    assert redact_url(url) == named


def test_the_error_names_the_host_and_the_reason_and_is_a_503() -> None:
    error = ChainUnavailable("https://user:pw@rpc.example.org/v3/key123", "ReadTimeout")
    assert str(error) == "RPC https://rpc.example.org is unreachable: ReadTimeout"
    assert error.details == {"rpc": "https://rpc.example.org", "reason": "ReadTimeout"}
    assert "key123" not in repr(error) and "pw" not in str(error.details)
    assert (error.code, status_of(error)) == ("chain_unavailable", 503)
    assert FromClient is ChainUnavailable  # one class, whichever module names it
