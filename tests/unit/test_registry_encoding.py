"""issueBatch calldata: the direct encoder equals eth-abi's generic one, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granular.adapters.chain.registry import (
    IssuanceCall,
    encode_issue_batch,
    encode_issue_batch_generic,
)

calls = st.builds(
    IssuanceCall,
    owner=st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    kind=st.sampled_from([0, 1]),
    quantity_wh=st.integers(min_value=0, max_value=2**64 - 1),
    data_hash=st.binary(min_size=32, max_size=32),
)


@given(batch=st.binary(min_size=32, max_size=32), items=st.lists(calls, max_size=5))
def test_the_direct_encoder_equals_the_generic_one(batch: bytes, items: list[IssuanceCall]) -> None:
    assert encode_issue_batch(batch, items) == encode_issue_batch_generic(batch, items)


def test_a_quantity_beyond_uint64_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_issue_batch(bytes(32), [IssuanceCall("0x" + "11" * 20, 0, 2**64, bytes(32))])


def test_claim_batch_calldata_equals_the_generic_encoder() -> None:
    from granular.adapters.chain.forwarder import registry_calldata
    from granular.adapters.chain.registry import encode_claim_batch

    entries = [(1, 2, 0), (2**40 + 3, 7, 2**64 - 1), (5, 2**255, 1)]
    assert encode_claim_batch(entries) == registry_calldata("claimBatch", entries)
    assert encode_claim_batch([]) == registry_calldata("claimBatch", [])
    with pytest.raises(ValueError):
        encode_claim_batch([(1, 2, 2**64)])
    with pytest.raises(ValueError):
        encode_claim_batch([(-1, 2, 5)])
    # slice id 0 names the previous entry's remainder
    remainders = [(5, 9, 3), (0, 10, 4), (11, 0, 2)]
    assert encode_claim_batch(remainders) == registry_calldata("claimBatch", remainders)
