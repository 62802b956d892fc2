"""Registering devices (one, a list, or a D-REC CSV), finding them, and their revisions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db.accounts import Principal
from granular.adapters.db.device_groups import find_device_group
from granular.adapters.db.devices import (
    DeviceFilter,
    DeviceRevision,
    StoredDevice,
    get_devices_by_id,
    list_device_revisions,
    list_devices,
    upsert_device,
)
from granular.domain.devices import (
    COLUMNS,
    REQUIRED,
    DeviceFieldInvalid,
    DeviceKind,
    DeviceSpec,
    parse_device,
)
from granular.domain.drec import sdg_labels
from granular.domain.drec_csv import CsvSyntaxError, records
from granular.errors import Conflict, NotFound, ValidationError
from granular.services.accounts import Role
from granular.services.reservations import reservable_filter

MAX_CSV_ROWS = 50_000


@dataclass(frozen=True, slots=True)
class DeviceSearch:
    """The filters of `GET /devices`, as values; `find_devices` turns them into a query."""

    country_code: str | None = None
    fuel_code: str | None = None
    off_taker: str | None = None
    device_type_code: str | None = None
    capacity_min_w: int | None = None
    capacity_max_w: int | None = None
    group_external_id: str | None = None  # the deviceGrpId of the devices' group
    kind: DeviceKind | None = None


class CsvInvalid(ValidationError):
    code = "csv_invalid"

    def __init__(self, message: str, details: Mapping[str, object]) -> None:
        super().__init__(message, details)


@dataclass(frozen=True, slots=True)
class RowResult:
    """What happened to one device: created, updated, unchanged or rejected."""

    line: int  # CSV line number, or the index in a JSON list
    status: str
    external_id: str | None
    device: StoredDevice | None = None
    field: str | None = None
    reason: str | None = None
    code: str | None = None
    valid: list[str] | None = None  # the accepted values, when the field takes one of a list


def register_devices(
    *,
    sessions: sessionmaker[Session],
    organization_id: int,
    rows: Sequence[tuple[int, Mapping[str, object] | str]],
    now: datetime,
    api_key_id: int | None = None,
) -> list[RowResult]:
    """Store every valid row (by organization and externalId); reject the others, each with
    its line, field and reason. A row repeating an earlier externalId of the same upload is
    rejected, so an upload never depends on its own row order. A row naming a device
    group (`deviceGrpId`) the organization does not have is rejected. Each created or
    updated device gets a revision written by `api_key_id`, in the same transaction."""
    try:
        return _register(sessions, organization_id, rows, now, api_key_id)
    except IntegrityError:
        # Another upload created one of these externalIds at the same time: nothing of this
        # one was kept; sent again, its rows come back as updated or unchanged.
        raise Conflict(
            "devices: another upload stored one of these externalIds at the same time; "
            "nothing of this one was kept, send it again"
        ) from None


def _register(
    sessions: sessionmaker[Session],
    organization_id: int,
    rows: Sequence[tuple[int, Mapping[str, object] | str]],
    now: datetime,
    api_key_id: int | None,
) -> list[RowResult]:
    results: list[RowResult] = []
    first_line: dict[str, int] = {}
    group_exists: dict[str, bool] = {}  # deviceGrpId → whether the organization has it
    with sessions.begin() as session:
        for line, raw in rows:
            if isinstance(raw, str):  # the reader already knows what is wrong with it
                results.append(RowResult(line, "rejected", None, None, "row", raw, "csv_row"))
                continue
            external_id = raw.get("externalId")
            shown = external_id if isinstance(external_id, str) else None
            try:
                spec = parse_device(raw, now=now)
            except DeviceFieldInvalid as error:
                results.append(
                    RowResult(
                        line,
                        "rejected",
                        shown,
                        None,
                        error.field,
                        error.rule,
                        error.code,
                        error.valid,
                    )
                )
                continue
            group = spec.group_external_id
            if group is not None and group not in group_exists:
                found = find_device_group(
                    session=session, organization_id=organization_id, external_id=group
                )
                group_exists[group] = found is not None
            if group is not None and not group_exists[group]:
                reason = (
                    "names no device group of your organization; create it with POST /device-groups"
                )
                results.append(
                    RowResult(
                        line, "rejected", shown, None, "deviceGrpId", reason, "unknown_device_group"
                    )
                )
                continue
            if spec.external_id in first_line:
                results.append(
                    RowResult(
                        line,
                        "rejected",
                        spec.external_id,
                        None,
                        "externalId",
                        f"repeats line {first_line[spec.external_id]} of this upload",
                        "duplicate_in_upload",
                    )
                )
                continue
            first_line[spec.external_id] = line
            status, stored = upsert_device(
                session=session,
                organization_id=organization_id,
                spec=spec,
                now=now,
                api_key_id=api_key_id,
            )
            results.append(RowResult(line, status, spec.external_id, stored))
    return results


def register_csv(
    *,
    sessions: sessionmaker[Session],
    organization_id: int,
    content: bytes,
    now: datetime,
    api_key_id: int | None = None,
) -> list[RowResult]:
    """`register_devices` for the rows of a D-REC device CSV (see `read_csv`)."""
    return register_devices(
        sessions=sessions,
        organization_id=organization_id,
        rows=read_csv(content),
        now=now,
        api_key_id=api_key_id,
    )


def read_csv(content: bytes) -> list[tuple[int, Mapping[str, object] | str]]:
    """(line number, row) for each data row of a D-REC device CSV, comma or pipe separated,
    straight or typographic quotes (domain/drec_csv.py). The header must name every
    required column, no unknown one and none twice; blank lines are skipped. A row's line
    is the one it starts on (a quoted cell may span lines). A file the reader cannot parse
    (a cell over its size limit, a quote never closed) is refused as a whole, naming the
    line."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        byte = content[error.start]
        hint = (
            f" (0x{byte:02x} is a typographic quote in Windows-1252: save the file as CSV UTF-8)"
            if 0x91 <= byte <= 0x94
            else ""
        )
        raise CsvInvalid(
            f"file: not UTF-8 (byte {error.start}){hint}", {"field": "file", "rule": "UTF-8"}
        ) from None
    rows_of = _records(text)
    try:
        _, first = next(rows_of)
    except StopIteration:
        raise CsvInvalid("file: empty; expected a header row", {"field": "file"}) from None
    header = [name.strip() for name in first]
    unknown = [name for name in header if name not in COLUMNS]
    missing = [name for name in REQUIRED if name not in header]
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t")):
        found = "semicolons" if ";" in header[0] else "tabs"
        raise CsvInvalid(
            f"header: the columns are separated by {found}; separate them with commas or "
            "pipes (|), as the D-REC device file does",
            {"field": "header", "value": header[0][:200], "rule": "comma or pipe separated"},
        )
    if unknown or missing or repeated:
        raise CsvInvalid(
            f"header: unknown columns {unknown}, missing columns {missing}, "
            f"repeated columns {repeated}",
            {
                "field": "header",
                "unknown": unknown,
                "missing": missing,
                "repeated": repeated,
                "known": list(COLUMNS),
            },
        )
    rows: list[tuple[int, Mapping[str, object] | str]] = []
    for line, record in rows_of:
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            rows.append((line, f"has {len(record)} cells; the header has {len(header)}"))
            continue
        rows.append((line, dict(zip(header, record, strict=True))))
        if len(rows) > MAX_CSV_ROWS:
            raise CsvInvalid(
                f"file: more than {MAX_CSV_ROWS} rows; split the upload",
                {"field": "file", "max_rows": MAX_CSV_ROWS},
            )
    return rows


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each record; a syntax error becomes CsvInvalid with its line."""
    try:
        yield from records(text)
    except CsvSyntaxError as error:
        raise CsvInvalid(
            str(error), {"field": "file", "line": error.line, "reason": error.reason}
        ) from None


def find_devices(
    *,
    sessions: sessionmaker[Session],
    caller: Principal,
    search: DeviceSearch,
    reservable: bool | None,
    now: datetime,
    limit: int,
    offset: int,
) -> list[StoredDevice]:
    """Devices matching `where`; with `reservable`, only those that can (True) or cannot
    (False) be reserved at `now` (held by a reservation, or released less than 12 h ago).
    A device owner sees its own organization's devices only; other roles see all."""
    where = DeviceFilter(
        organization_id=None,
        country_code=search.country_code,
        fuel_code=search.fuel_code,
        off_taker=search.off_taker,
        device_type_code=search.device_type_code,
        capacity_min_w=search.capacity_min_w,
        capacity_max_w=search.capacity_max_w,
        group_external_id=search.group_external_id,
        kind=search.kind,
    )
    if caller.role == Role.DEVICE_OWNER.value:
        where = replace(where, organization_id=caller.organization_id)
    where = reservable_filter(sessions=sessions, where=where, reservable=reservable, now=now)
    with sessions() as session:
        return list_devices(session=session, where=where, limit=limit, offset=offset)


def device_revisions(
    *, sessions: sessionmaker[Session], caller: Principal, device_id: int
) -> list[DeviceRevision]:
    """Every revision of the device, oldest first. Visible as in `find_devices`: a device
    owner sees its own organization's devices only (another's is not found); other roles
    see all."""
    with sessions() as session:
        found = get_devices_by_id(session=session, device_ids=[device_id])
        if not found or (
            caller.role == Role.DEVICE_OWNER.value
            and found[0].organization_id != caller.organization_id
        ):
            raise NotFound(f"deviceId: no device {device_id}")
        return list_device_revisions(session=session, device=found[0])


def revision_json(revision: DeviceRevision) -> dict[str, Any]:
    """`device_json` of the revision's spec, with its number and when it came into force."""
    return {
        **device_json(revision.device),
        "revision": revision.revision,
        "validFrom": revision.valid_from.isoformat(),
    }


def device_json(device: StoredDevice, organization: str | None = None) -> dict[str, Any]:
    spec = device.spec
    body: dict[str, Any] = {
        "id": device.id,
        "externalId": spec.external_id,
        "projectName": spec.project_name,
        "countryCode": spec.country_code,
        "fuelCode": spec.fuel_code,
        "deviceTypeCode": spec.device_type_code,
        "capacity": spec.capacity_w,
        "commissioningDate": spec.commissioning_date.isoformat(),
        "gridInterconnection": spec.grid_interconnection,
        "offTaker": spec.off_taker,
        "yieldValue": format(spec.yield_kwh_per_kw_year, "f"),
        "latitude": None if spec.latitude is None else format(spec.latitude, "f"),
        "longitude": None if spec.longitude is None else format(spec.longitude, "f"),
        "description": spec.description,
        "kind": spec.kind.value,
        "organizationId": device.organization_id,
        **drec_json(spec),
    }
    return body


def drec_json(spec: DeviceSpec) -> dict[str, Any]:
    """The D-REC fields of a device spec, named as in the D-REC file. `SDGBenefits` lists
    the goals as `SDG<n>` (what a re-upload accepts); `sdgBenefitsBits` is the stored bit
    set (bit n - 1 for SDG n)."""
    return {
        "version": spec.drec_version,
        "deviceGrpId": spec.group_external_id,
        "orgId": spec.drec_org_id,
        "organisationName": spec.organisation_name,
        "deviceOnBoardedBy": spec.onboarded_by,
        "deviceOEM": spec.device_oem,
        "address": spec.address,
        "postalCode": spec.postal_code,
        "energyStorage": spec.energy_storage,
        "energyStorageCapacity": spec.energy_storage_capacity_wh,
        "qualityLabels": spec.quality_labels,
        "SDGBenefits": sdg_labels(spec.sdg_benefits),
        "sdgBenefitsBits": spec.sdg_benefits,
        "impactStory": spec.impact_story,
        "images": list(spec.images),
    }
