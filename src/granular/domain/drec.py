"""D-REC values as D-REC users write them: the device file's columns, SDG benefits as a
bit set, and lists written in one cell.

SDG benefits are stored as one integer: bit `n - 1` is set when the device (or group)
serves Sustainable Development Goal `n` (SDG 1 is bit 0, value 1; SDG 17 is bit 16, value
65536). A D-REC file names goals by number (`7`, `SDG7`, `SDG 7`) or by name
(`Affordable and Clean Energy`, any case); one cell may hold several, separated by `,` or
`;` (a name containing a comma, like SDG 9's, is recognised whole first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

# The device file of the D-REC notes, in its order. Every one is a device column.
DREC_HEADER: Final = (
    "version",
    "externalId",
    "deviceGrpId",
    "orgId",
    "organisationName",
    "deviceOnBoardedBy",
    "deviceOEM",
    "address",
    "latitude",
    "longitude",
    "countryCode",
    "postalCode",
    "fuelCode",
    "deviceTypeCode",
    "capacity",
    "commissioningDate",
    "gridInterconnection",
    "energyStorage",
    "energyStorageCapacity",
    "offTaker",
    "qualityLabels",
    "SDGBenefits",
    "impactStory",
    "images",
)

# The 17 UN Sustainable Development Goals, by number.
SDG_NAMES: Final = {
    1: "No Poverty",
    2: "Zero Hunger",
    3: "Good Health and Well-being",
    4: "Quality Education",
    5: "Gender Equality",
    6: "Clean Water and Sanitation",
    7: "Affordable and Clean Energy",
    8: "Decent Work and Economic Growth",
    9: "Industry, Innovation and Infrastructure",
    10: "Reduced Inequalities",
    11: "Sustainable Cities and Communities",
    12: "Responsible Consumption and Production",
    13: "Climate Action",
    14: "Life Below Water",
    15: "Life on Land",
    16: "Peace, Justice and Strong Institutions",
    17: "Partnerships for the Goals",
}
# The bit of each goal: SDG n ↔ 1 << (n - 1).
SDG_BITS: Final = {number: 1 << (number - 1) for number in SDG_NAMES}
ALL_SDG_BITS: Final = (1 << len(SDG_NAMES)) - 1

_SDG_TOKEN = re.compile(r"^(?:sdg)?[\s_-]*0*(\d{1,2})$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;]")
_SPACES = re.compile(r"\s+")
_BY_NAME = sorted(
    ((name.lower().replace("&", "and"), number) for number, name in SDG_NAMES.items()),
    key=lambda pair: -len(pair[0]),
)


class SdgUnknown(ValueError):
    """A token that names no goal; `token` is what was not understood."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower().replace("&", "and"))


def sdg_number(token: object) -> int:
    """The goal one token names: an int 1-17, "7", "SDG7", "sdg 07" or a goal's name."""
    if isinstance(token, bool):
        raise SdgUnknown(repr(token))
    if isinstance(token, int):
        if token in SDG_NAMES:
            return token
        raise SdgUnknown(str(token))
    if not isinstance(token, str):
        raise SdgUnknown(repr(token))
    text = _normal(token)
    match = _SDG_TOKEN.match(text)
    if match and int(match.group(1)) in SDG_NAMES:
        return int(match.group(1))
    for name, number in _BY_NAME:
        if text == name:
            return number
    raise SdgUnknown(token.strip())


def sdg_bits(value: object) -> int:
    """The bit set of the goals `value` names: None or "" is 0; a list names one goal (or
    one cell of several) per item; a text is one cell. Raises SdgUnknown for the first
    token that names no goal."""
    if value is None:
        return 0
    items: Sequence[object] = value if isinstance(value, list | tuple) else [value]
    bits = 0
    for item in items:
        for token in _tokens(item):
            bits |= SDG_BITS[sdg_number(token)]
    return bits


def _tokens(item: object) -> list[object]:
    if not isinstance(item, str):
        return [item]
    text = _normal(item)
    for name, number in _BY_NAME:  # longest first: whole names, commas included
        text = text.replace(name, f";sdg{number};")
    return [token.strip() for token in _SEPARATORS.split(text) if token.strip()]


def sdg_labels(bits: int) -> list[str]:
    """ "SDG<n>" for each goal in the bit set, in goal order: what `sdg_bits` reads back."""
    return [f"SDG{number}" for number, bit in SDG_BITS.items() if bits & bit]


def split_list(value: object) -> list[str] | None:
    """A list of texts as one cell writes it (`a.jpg, b.jpg` or `a.jpg;b.jpg`) or as a JSON
    list; blanks dropped. None when `value` is neither a text nor a list of texts."""
    if isinstance(value, str):
        return [part.strip() for part in _SEPARATORS.split(value) if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(part, str) for part in value):
        return [part.strip() for part in value if part.strip()]
    return None
