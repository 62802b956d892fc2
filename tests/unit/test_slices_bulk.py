"""The pure slice model's bulk commands, without a chain: each entry as its single command,
all or nothing, and the 48-bit quantity bound. (tests/integration/test_registry_properties.py
holds the model against the contract.)"""

from __future__ import annotations

import pytest

from granular.domain.slices import (
    MAX_QUANTITY_WH,
    Claim,
    Issuance,
    Kind,
    RegistryModel,
    SliceRuleViolation,
    SliceState,
    Transfer,
)

ISSUER, OWNER, BUYER = "0xIssuer", "0xOwner", "0xBuyer"


def _model(*items: tuple[Kind, int]) -> RegistryModel:
    model = RegistryModel(issuers={ISSUER})
    model.issue_batch(
        ISSUER, b"\x01" * 32, [Issuance(OWNER, kind, qty, b"\x00" * 32) for kind, qty in items]
    )
    return model


def _state(model: RegistryModel) -> tuple[object, ...]:
    return (dict(model.slices), dict(model.active_count), model.next_id)


def test_claim_batch_returns_claim_ids_and_splits_where_a_side_holds_more() -> None:
    model = _model(
        (Kind.PRODUCTION, 100),
        (Kind.CONSUMPTION, 100),
        (Kind.PRODUCTION, 50),
        (Kind.CONSUMPTION, 30),
    )

    # 1 and 2 whole; 30 Wh of 3 (split into 5: 30 and 6: 20) against all of 4
    assert model.claim_batch(OWNER, [Claim(1, 2), Claim(3, 4, 30)]) == [1, 5]

    states = {i: (model.slices[i].quantity_wh, model.slices[i].state) for i in model.slices}
    assert states == {
        1: (100, SliceState.CLAIMED),
        2: (100, SliceState.CLAIMED),
        3: (50, SliceState.REMOVED),
        4: (30, SliceState.CLAIMED),
        5: (30, SliceState.CLAIMED),
        6: (20, SliceState.ACTIVE),
    }
    assert model.certificate_total_wh(3) == 50
    assert model.active_count[OWNER] == 1


def test_claim_batch_slice_zero_names_the_remainder_the_previous_entry_left() -> None:
    model = _model(
        (Kind.PRODUCTION, 300),
        (Kind.PRODUCTION, 500),
        (Kind.CONSUMPTION, 700),
    )

    # 1 whole against 4 (300 of 3, which leaves 5: 400); 6 (400 of 2, which leaves 7: 100)
    # against 5, named 0
    assert model.claim_batch(OWNER, [Claim(1, 3, 300), Claim(2, 0, 400)]) == [1, 6]

    states = {i: (s.quantity_wh, s.state) for i, s in model.slices.items()}
    assert states == {
        1: (300, SliceState.CLAIMED),
        2: (500, SliceState.REMOVED),
        3: (700, SliceState.REMOVED),
        4: (300, SliceState.CLAIMED),
        5: (400, SliceState.CLAIMED),
        6: (400, SliceState.CLAIMED),
        7: (100, SliceState.ACTIVE),
    }
    assert model.certificate_total_wh(3) == 700


@pytest.mark.parametrize(
    ("entries", "values"),
    [
        ([Claim(0, 2, 10)], (0, int(Kind.PRODUCTION))),
        ([Claim(1, 2, 0), Claim(3, 0, 10)], (1, int(Kind.CONSUMPTION))),
        ([Claim(1, 2, 100), Claim(3, 0, 10)], (1, int(Kind.CONSUMPTION))),
    ],
    ids=["first_entry", "after_a_whole_claim", "after_an_exact_part"],
)
def test_claim_batch_slice_zero_without_a_remainder_is_refused_whole(
    entries: list[Claim], values: tuple[int, int]
) -> None:
    model = _model((Kind.PRODUCTION, 100), (Kind.CONSUMPTION, 100), (Kind.PRODUCTION, 100))
    before = _state(model)

    with pytest.raises(SliceRuleViolation) as refused:
        model.claim_batch(OWNER, entries)

    assert (refused.value.error, refused.value.values) == ("CertificateRegistryNoRemainder", values)
    assert _state(model) == before


@pytest.mark.parametrize(
    ("last", "error", "values"),
    [
        (Claim(6, 8, 51), "CertificateRegistryInsufficientQuantity", (6, 50, 51)),
        (Claim(6, 8, 0), "CertificateRegistryQuantityMismatch", (6, 50, 8, 70)),
    ],
    ids=["one_wh_over", "whole_but_unequal"],
)
def test_a_failing_last_claim_undoes_the_whole_batch(
    last: Claim, error: str, values: tuple[int, ...]
) -> None:
    model = _model(
        (Kind.PRODUCTION, 10),
        (Kind.CONSUMPTION, 10),
        (Kind.PRODUCTION, 100),
        (Kind.CONSUMPTION, 120),
    )
    before = _state(model)

    # the second entry splits 3 into 5 (50) + 6 (50) and 4 into 7 (50) + 8 (70), claims 5 and 7
    with pytest.raises(SliceRuleViolation) as raised:
        model.claim_batch(OWNER, [Claim(1, 2), Claim(3, 4, 50), last])

    assert (raised.value.error, raised.value.values) == (error, values)
    assert _state(model) == before


def test_transfer_batch_whole_part_and_exact_size() -> None:
    model = _model((Kind.PRODUCTION, 100), (Kind.PRODUCTION, 40), (Kind.PRODUCTION, 7))

    moved = model.transfer_batch(
        OWNER, [Transfer(1, 0, BUYER), Transfer(2, 39, BUYER), Transfer(3, 7, BUYER)]
    )

    assert moved == [1, 4, 3]
    assert (model.slices[4].owner, model.slices[4].quantity_wh) == (BUYER, 39)
    assert (model.slices[5].owner, model.slices[5].quantity_wh) == (OWNER, 1)
    assert model.active_count == {OWNER: 1, BUYER: 3}


def test_transfer_batch_of_one_wh_over_undoes_the_earlier_entries() -> None:
    model = _model((Kind.PRODUCTION, 100), (Kind.PRODUCTION, 40))
    before = _state(model)

    with pytest.raises(SliceRuleViolation) as raised:
        model.transfer_batch(OWNER, [Transfer(1, 0, BUYER), Transfer(2, 41, BUYER)])

    assert (raised.value.error, raised.value.values) == (
        "CertificateRegistryInsufficientQuantity",
        (2, 40, 41),
    )
    assert _state(model) == before


@pytest.mark.parametrize("command", ["claim_batch", "transfer_batch"])
def test_an_empty_bulk_command_is_refused(command: str) -> None:
    with pytest.raises(SliceRuleViolation) as raised:
        getattr(RegistryModel(), command)(OWNER, [])

    assert raised.value.error == "CertificateRegistryEmptyList"


@pytest.mark.parametrize(
    ("quantity_wh", "refused"),
    [(MAX_QUANTITY_WH, False), (MAX_QUANTITY_WH + 1, True)],
    ids=["2**48-1", "2**48"],
)
def test_issued_quantities_are_bounded_by_48_bits(quantity_wh: int, refused: bool) -> None:
    model = RegistryModel(issuers={ISSUER})
    issue = [Issuance(OWNER, Kind.PRODUCTION, quantity_wh, b"\x00" * 32)]

    if refused:
        with pytest.raises(SliceRuleViolation) as raised:
            model.issue_batch(ISSUER, b"\x01" * 32, issue)
        assert (raised.value.error, raised.value.values) == (
            "CertificateRegistryQuantityTooLarge",
            (1, quantity_wh, MAX_QUANTITY_WH),
        )
        assert model.next_id == 1
    else:
        assert model.issue_batch(ISSUER, b"\x01" * 32, issue) == 1
