"""D-REC formats: SDG bit sets, the pipe/comma reader with typographic quotes, I-REC codes
and the D-REC device and group fields, each at its edges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from granular.domain.codes import DEVICE_TYPE_CODES, FUEL_CODES
from granular.domain.device_groups import DeviceGroupFieldInvalid, parse_device_group
from granular.domain.devices import COLUMNS, MAX_IMAGES, DeviceFieldInvalid, parse_device
from granular.domain.drec import (
    ALL_SDG_BITS,
    DREC_HEADER,
    SDG_BITS,
    SDG_NAMES,
    SdgUnknown,
    sdg_bits,
    sdg_labels,
)
from granular.domain.drec_csv import MAX_CELL_CHARS, CsvSyntaxError, records, separator_of

NOW = datetime(2026, 6, 15, tzinfo=UTC)


def raw(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "externalId": "site-1",
        "countryCode": "KEN",
        "fuelCode": "ES100",
        "deviceTypeCode": "TC110",
        "capacity": 5000,
        "commissioningDate": "2024-03-01",
        "gridInterconnection": True,
        "offTaker": "School",
    }
    fields.update(overrides)
    return fields


# --- SDG bit set -----------------------------------------------------------------------


def test_each_goal_has_its_own_bit_and_all_17_fill_17_bits() -> None:
    assert [SDG_BITS[n] for n in (1, 2, 17)] == [1, 2, 65536]
    assert len(set(SDG_BITS.values())) == 17
    assert sum(SDG_BITS.values()) == ALL_SDG_BITS == 2**17 - 1


@pytest.mark.parametrize(
    ("value", "bits"),
    [
        (None, 0),
        ([], 0),
        (1, 1),
        (17, 1 << 16),
        ("7", 1 << 6),
        ("SDG7", 1 << 6),
        ("sdg 07", 1 << 6),
        ("SDG-13", 1 << 12),
        ("Affordable and Clean Energy", 1 << 6),
        ("  affordable AND clean   energy ", 1 << 6),
        ("Good Health and Well-being", 1 << 2),
        ("Industry, Innovation and Infrastructure", 1 << 8),
        ("Industry, Innovation and Infrastructure, SDG1", (1 << 8) | 1),
        ("SDG3;SDG4, 7", (1 << 2) | (1 << 3) | (1 << 6)),
        (["SDG1", 2, "Quality Education"], 1 | 2 | (1 << 3)),
        (["SDG7", "SDG7"], 1 << 6),
        ([str(n) for n in range(1, 18)], ALL_SDG_BITS),
    ],
    ids=[
        "none",
        "empty-list",
        "int-1",
        "int-17",
        "digit",
        "SDG7",
        "spaced-zero-padded",
        "dash",
        "name",
        "name-any-case-and-spaces",
        "name-with-hyphen",
        "name-with-comma",
        "name-with-comma-then-more",
        "mixed-separators",
        "json-list",
        "repeated",
        "all-17",
    ],
)
def test_goals_by_number_or_name_become_their_bits(value: object, bits: int) -> None:
    assert sdg_bits(value) == bits


@pytest.mark.parametrize(
    "value",
    [0, 18, "SDG0", "SDG18", "Clean Energy", True, 7.0, ["SDG1", "nope"]],
    ids=["int-0", "int-18", "SDG0", "SDG18", "half-a-name", "bool", "float", "one-bad-in-list"],
)
def test_a_token_naming_no_goal_is_refused(value: object) -> None:
    with pytest.raises(SdgUnknown):
        sdg_bits(value)


def test_labels_read_back_as_the_same_bits() -> None:
    bits = SDG_BITS[3] | SDG_BITS[7] | SDG_BITS[17]
    assert sdg_labels(bits) == ["SDG3", "SDG7", "SDG17"]
    assert sdg_bits(sdg_labels(bits)) == bits
    assert all(sdg_bits(name) == SDG_BITS[n] for n, name in SDG_NAMES.items())


# --- the reader ---------------------------------------------------------------------


def cells(text: str) -> list[tuple[int, list[str]]]:
    return list(records(text))


@pytest.mark.parametrize(
    ("header", "separator"),
    [("a|b,c", "|"), ("a,b", ","), ("a", ","), ("a,b\nc|d", ",")],
    ids=["pipe-wins", "comma", "one-column", "only-the-header-line-counts"],
)
def test_the_separator_comes_from_the_header_line(header: str, separator: str) -> None:
    assert separator_of(header) == separator


def test_pipe_cells_are_stripped_and_commas_are_text() -> None:
    assert cells("a | b |c\n 1,5 | x |\n") == [(1, ["a", "b", "c"]), (2, ["1,5", "x", ""])]


def test_typographic_quotes_are_stripped_and_quote_a_separator() -> None:
    text = "name|story\n“Solar | Co”|‘it’s “the best” site’\n"
    assert cells(text) == [(1, ["name", "story"]), (2, ["Solar | Co", "it’s “the best” site"])]


def test_straight_quotes_double_to_escape_and_keep_inner_blanks() -> None:
    assert cells('a,b\n" x ""y"" ",z\n') == [(1, ["a", "b"]), (2, [' x "y" ', "z"])]


def test_a_quoted_cell_may_span_lines_and_the_next_record_keeps_its_line() -> None:
    text = "a|b\r\n“two\r\nlines”|x\r\n\r\nc|d"
    assert cells(text) == [(1, ["a", "b"]), (2, ["two\nlines", "x"]), (4, [""]), (5, ["c", "d"])]


def test_a_quote_never_closed_names_its_line() -> None:
    with pytest.raises(CsvSyntaxError) as refused:
        cells("a|b\nx|y\n“open|z\n")
    assert refused.value.line == 3


@pytest.mark.parametrize(("extra", "refused"), [(0, False), (1, True)], ids=["at-limit", "over"])
def test_a_cell_over_the_limit_names_its_line(extra: int, refused: bool) -> None:
    text = "a|b\nx|" + "y" * (MAX_CELL_CHARS + extra) + "\n"
    if refused:
        with pytest.raises(CsvSyntaxError) as error:
            cells(text)
        assert error.value.line == 2
    else:
        assert len(cells(text)[1][1][1]) == MAX_CELL_CHARS


# --- codes and D-REC device fields --------------------------------------------------


def test_every_drec_column_is_a_device_column() -> None:
    assert set(DREC_HEADER) <= set(COLUMNS)


@pytest.mark.parametrize(
    ("field", "value", "known"),
    [("fuelCode", "ES999", FUEL_CODES), ("deviceTypeCode", "TC999", DEVICE_TYPE_CODES)],
    ids=["fuel", "device-type"],
)
def test_an_unknown_code_is_refused_listing_the_valid_ones(
    field: str, value: str, known: dict[str, str]
) -> None:
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(**{field: value}), now=NOW)
    assert refused.value.field == field
    assert refused.value.details["valid"] == list(known)
    assert "GET /codes" in refused.value.rule


def test_a_code_in_lower_case_is_accepted_in_upper_case() -> None:
    spec = parse_device(raw(fuelCode="es100", deviceTypeCode="tc140"), now=NOW)
    assert (spec.fuel_code, spec.device_type_code) == ("ES100", "TC140")


def test_drec_fields_are_kept() -> None:
    spec = parse_device(
        raw(
            version=1.0,
            deviceGrpId="grp-1",
            orgId=42,
            organisationName="Solar Co",
            deviceOnBoardedBy="Jane",
            deviceOEM="SunKing",
            address="Plot 7, Kisumu",
            postalCode="40100",
            energyStorage="yes",
            energyStorageCapacity="12000",
            qualityLabels="Lighting Global",
            SDGBenefits="SDG7, SDG3",
            impactStory="Lights for a clinic",
            images="a.jpg; b.jpg",
        ),
        now=NOW,
    )
    assert (spec.drec_version, spec.group_external_id, spec.drec_org_id) == ("1.0", "grp-1", "42")
    assert (spec.energy_storage, spec.energy_storage_capacity_wh) == (True, 12000)
    assert spec.sdg_benefits == SDG_BITS[3] | SDG_BITS[7]
    assert spec.images == ("a.jpg", "b.jpg")
    blank = parse_device(raw(version="", SDGBenefits="", images="", energyStorage=""), now=NOW)
    assert (blank.drec_version, blank.sdg_benefits, blank.images) == (None, 0, ())
    assert blank.energy_storage is None


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("SDGBenefits", "SDG18", "names no SDG (sdg18)"),
        ("energyStorageCapacity", "-1", "whole number of Wh"),
        ("energyStorageCapacity", "1.5", "whole number of Wh"),
        ("energyStorage", "maybe", "must be true or false"),
        ("version", "1 0", "must be a version"),
        ("deviceGrpId", "grp 1", "must be 1-64 letters"),
        ("images", [1, 2], "must be a list of texts"),
        ("images", ["x"] * (MAX_IMAGES + 1), f"more than {MAX_IMAGES} images"),
        ("postalCode", "x" * 33, "longer than 32"),
    ],
    ids=[
        "sdg-18",
        "storage-negative",
        "storage-fraction",
        "storage-flag",
        "version-space",
        "group-space",
        "images-numbers",
        "images-21",
        "postal-code-long",
    ],
)
def test_a_bad_drec_field_is_named_with_its_rule(field: str, value: object, rule: str) -> None:
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(**{field: value}), now=NOW)
    assert refused.value.field == field
    assert rule in refused.value.rule


def test_storage_capacity_with_storage_false_is_refused_but_zero_is_not() -> None:
    with pytest.raises(DeviceFieldInvalid) as refused:
        parse_device(raw(energyStorage=False, energyStorageCapacity=1), now=NOW)
    assert refused.value.rule == "is given but energyStorage is false"
    spec = parse_device(raw(energyStorage=False, energyStorageCapacity=0), now=NOW)
    assert spec.energy_storage_capacity_wh == 0
    assert len(parse_device(raw(images=["x"] * MAX_IMAGES), now=NOW).images) == MAX_IMAGES


# --- device groups ------------------------------------------------------------------


def test_a_group_keeps_its_fields_and_sdg_bits() -> None:
    spec = parse_device_group(
        {
            "deviceGrpId": "grp-1",
            "name": " Kisumu clinics ",
            "SDGBenefits": ["SDG3", "Affordable and Clean Energy"],
            "impactStory": "Clinics",
            "images": ["a.jpg"],
        }
    )
    assert (spec.external_id, spec.name, spec.sdg_benefits) == ("grp-1", "Kisumu clinics", 68)
    assert spec.images == ("a.jpg",)


@pytest.mark.parametrize(
    ("raw_group", "field"),
    [
        ({"name": "x"}, "deviceGrpId"),
        ({"deviceGrpId": "g"}, "name"),
        ({"deviceGrpId": "g", "name": "x", "colour": "red"}, "colour"),
        ({"deviceGrpId": "g", "name": "x", "SDGBenefits": "SDG0"}, "SDGBenefits"),
    ],
    ids=["no-id", "no-name", "unknown-field", "bad-sdg"],
)
def test_a_bad_group_field_is_named(raw_group: dict[str, object], field: str) -> None:
    with pytest.raises(DeviceGroupFieldInvalid) as refused:
        parse_device_group(raw_group)
    assert refused.value.field == field
    assert refused.value.code == "device_group_field_invalid"


# --- the reader, as a property ------------------------------------------------------

CELL = st.text(alphabet="ab |,’\t\n\"'", max_size=8)


@given(st.lists(st.lists(st.tuples(CELL, st.booleans()), min_size=1, max_size=5), max_size=6))
def test_any_cells_written_by_a_d_rec_user_read_back(rows: list[list[tuple[str, bool]]]) -> None:
    """Each cell is written in “ ” when asked or when it must be (it holds a separator, a
    line end or starts with a quote), else bare; reading gives every cell back: a quoted
    one as written, a bare one stripped of blanks, each record at the line it starts on."""
    lines: list[str] = []
    expected: list[tuple[int, list[str]]] = []
    line = 1
    for row in rows:
        written, read = [], []
        for cell, quote in row:
            bare_ok = not any(c in cell for c in "|\n") and not cell.lstrip(" \t").startswith(
                ('"', "’")
            )
            if quote or not bare_ok:
                written.append(f"“{cell}”")
                read.append(cell)
            else:
                written.append(cell)
                read.append(cell.strip(" \t"))
        expected.append((line, read))
        text = "|".join(written)
        line += text.count("\n") + 1
        lines.append(text)
    assert list(records("".join(f"{text}\n" for text in lines), "|")) == expected


def test_lines_with_and_without_quotes_mix() -> None:
    text = "a|b\nx | y\n“p|q”|r\n s |t\n"
    assert cells(text) == [(1, ["a", "b"]), (2, ["x", "y"]), (3, ["p|q", "r"]), (4, ["s", "t"])]
