"""Device groups as D-REC users describe them: `deviceGrpId` (unique per organization),
a name, the SDG benefits they serve (a bit set, domain/drec.py), an impact story and images.

A device names its group by `deviceGrpId`; the group must exist in the device's
organization first (services/devices.py refuses the device otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from granular.domain.devices import (
    EXTERNAL_ID,
    DeviceFieldInvalid,
    _blank,
    _matching,
    _text,
    parse_images,
    parse_sdg_benefits,
)

# API column → DeviceGroupSpec field.
GROUP_COLUMNS = {
    "deviceGrpId": "external_id",
    "name": "name",
    "SDGBenefits": "sdg_benefits",
    "impactStory": "impact_story",
    "images": "images",
}
GROUP_REQUIRED = ("deviceGrpId", "name")


class DeviceGroupFieldInvalid(DeviceFieldInvalid):
    code = "device_group_field_invalid"


@dataclass(frozen=True, slots=True)
class DeviceGroupSpec:
    external_id: str
    name: str
    sdg_benefits: int = 0
    impact_story: str | None = None
    images: tuple[str, ...] = ()

    def as_columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_device_group(raw: Mapping[str, object]) -> DeviceGroupSpec:
    """A DeviceGroupSpec, or DeviceGroupFieldInvalid naming field, value and rule. Checks,
    in order: no unknown field, the required ones present, then each field."""
    for name in raw:
        if name not in GROUP_COLUMNS:
            known = ", ".join(GROUP_COLUMNS)
            raise DeviceGroupFieldInvalid(
                name,
                None,
                f"is not a device group field; known: {known}",
                valid=list(GROUP_COLUMNS),
            )
    for name in GROUP_REQUIRED:
        if _blank(raw.get(name)):
            raise DeviceGroupFieldInvalid(name, raw.get(name), "is required")
    try:
        story = raw.get("impactStory")
        return DeviceGroupSpec(
            external_id=_matching(
                "deviceGrpId",
                raw["deviceGrpId"],
                EXTERNAL_ID,
                "must be 1-64 letters, digits, - or _",
            ),
            name=_text("name", raw["name"]),
            sdg_benefits=parse_sdg_benefits("SDGBenefits", raw.get("SDGBenefits")),
            impact_story=None if _blank(story) else _text("impactStory", story, max_length=4000),
            images=parse_images("images", raw.get("images")),
        )
    except DeviceGroupFieldInvalid:
        raise
    except DeviceFieldInvalid as error:
        raise DeviceGroupFieldInvalid(error.field, error.value, error.rule, error.valid) from None
