"""/codes: the I-REC fuel and device type codes a device may carry, with their names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from granular.api.deps import Caller
from granular.api.exact_json import ExactJSONRoute
from granular.api.schemas_fleet import CodesPublic
from granular.domain.codes import (
    DEVICE_TYPE_CODES,
    DREC_DEVICE_TYPE_CODES,
    DREC_FUEL_CODES,
    FUEL_CODES,
)
from granular.domain.drec import SDG_BITS, SDG_NAMES

router = APIRouter(prefix="/codes", tags=["codes"], route_class=ExactJSONRoute)


@router.get(
    "",
    response_model=CodesPublic,
    summary="The fuel codes, device type codes and SDGs devices may name",
)
def get_codes(caller: Caller) -> dict[str, Any]:
    """Every code `POST /devices` accepts, with its name; `drec` marks the D-REC
    programme's (solar) subset. `sdgs` lists the goals `SDGBenefits` may name and the bit
    each sets in the stored bit set."""
    return {
        "fuelCodes": [
            {"code": code, "name": name, "drec": code in DREC_FUEL_CODES}
            for code, name in FUEL_CODES.items()
        ],
        "deviceTypeCodes": [
            {"code": code, "name": name, "drec": code in DREC_DEVICE_TYPE_CODES}
            for code, name in DEVICE_TYPE_CODES.items()
        ],
        "sdgs": [
            {"number": number, "code": f"SDG{number}", "name": name, "bit": SDG_BITS[number]}
            for number, name in SDG_NAMES.items()
        ],
    }
