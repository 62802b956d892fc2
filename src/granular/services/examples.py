"""The example fleet of examples/fleet.json, loaded once by `granular run` on the embedded
stack, through the same services the API calls (so it obeys every rule a user's data does).

What it makes: two organizations with an API key each (a device owner and a buyer),
production devices of two fuels (solar with `history` reads, wind with `aggregate` reads
in kWh), the buyer's consumption meter (`delta` reads), and an hourly reservation covering
the last `daysBack` days. Reads are generated relative to `now`, whole hours, up to the last
full hour, from deterministic profiles (no randomness: two loads make the same reads).

"Once": the keys and what was loaded are written to `var/examples.json` (mode 0600) at the
end; while that file exists nothing is loaded again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from granular.domain.energy import MaxEnergyPolicy
from granular.domain.gas import Tier
from granular.domain.reads import ReadKind
from granular.domain.units import EnergyUnit
from granular.domain.windows import Frequency
from granular.errors import GranularError
from granular.services.accounts import authenticate, create_api_key
from granular.services.devices import register_devices
from granular.services.meter_reads import SubmittedRead, ingest_reads
from granular.services.reservations import NewReservation, create_reservation

MARKER = "examples.json"


class ExampleFleetInvalid(GranularError):
    code = "example_fleet_invalid"


@dataclass(frozen=True, slots=True)
class LoadedExamples:
    keys: dict[str, str]  # role name in the fleet ("owner", "buyer") -> API key
    devices: dict[str, int]  # externalId -> device id
    reservation_id: int
    reads_accepted: int
    loaded_at: datetime


def loaded(var_dir: Path) -> dict[str, Any] | None:
    path = var_dir / MARKER
    if not path.is_file():
        return None
    found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def profile_wh(profile: str, capacity_w: int, hour_start: datetime) -> int:
    """Energy in one hour: a solar curve peaking at 23 % of nameplate at noon, a wind
    output between 2 and 18 % of nameplate, a site that draws 6-18 % of its connection.

    Modest on purpose: every hour stays under the D-REC yield bound even where that rule
    is applied per interval (1800 kWh/kW/year x 1.2 is 24.6 % of nameplate in an hour)."""
    h = hour_start.hour + 0.5
    day = hour_start.timetuple().tm_yday
    if profile == "solar":
        share = max(0.0, math.sin(math.pi * (h - 6) / 12)) * 0.23 if 6 <= h <= 18 else 0.0
    elif profile == "wind":
        share = 0.1 + 0.08 * math.sin(day * 1.7 + h / 3.0)
    elif profile == "site":
        share = 0.12 + 0.06 * math.sin(math.pi * (h - 9) / 12)
    else:
        raise ExampleFleetInvalid(f"reads.profile: {profile!r} is not solar, wind or site")
    return int(capacity_w * share)


def reads_for(
    spec: Mapping[str, Any], capacity_w: int, start: datetime, end: datetime
) -> list[SubmittedRead]:
    """Hourly reads of `spec`'s kind covering [start, end)."""
    kind = spec["type"]
    profile = spec["profile"]
    hours = int((end - start) / timedelta(hours=1))
    starts = [start + timedelta(hours=i) for i in range(hours)]
    if kind == "history":
        return [
            SubmittedRead(
                end=t + timedelta(hours=1),
                value=Decimal(profile_wh(profile, capacity_w, t)),
                start=t,
            )
            for t in starts
        ]
    if kind == "delta":  # the first read is the baseline
        return [SubmittedRead(end=start, value=Decimal(0))] + [
            SubmittedRead(
                end=t + timedelta(hours=1), value=Decimal(profile_wh(profile, capacity_w, t))
            )
            for t in starts
        ]
    if kind == "aggregate":  # running totals in kWh, exact to the Wh
        total_wh = int(spec.get("startTotalWh", 0))
        reads = [SubmittedRead(end=start, value=Decimal(total_wh) / 1000)]
        for t in starts:
            total_wh += profile_wh(profile, capacity_w, t)
            reads.append(SubmittedRead(end=t + timedelta(hours=1), value=Decimal(total_wh) / 1000))
        return reads
    raise ExampleFleetInvalid(f"reads.type: {kind!r} is not history, delta or aggregate")


def load_examples(
    *,
    sessions: sessionmaker[Session],
    fleet_path: Path,
    var_dir: Path,
    policy: MaxEnergyPolicy,
    now: datetime,
) -> LoadedExamples | None:
    """Load the fleet unless var/examples.json says it was; None when it was."""
    if loaded(var_dir) is not None:
        return None
    fleet = json.loads(fleet_path.read_text(encoding="utf-8"))
    keys: dict[str, str] = {}
    principals = {}
    for role_name, org in fleet["organizations"].items():
        created = create_api_key(
            sessions=sessions, organization=org["name"], role=org["role"], label="examples", now=now
        )
        keys[role_name] = created.key
        principals[role_name] = authenticate(
            sessions=sessions, authorization=f"Bearer {created.key}"
        )
    booking = fleet["reservation"]
    last_hour = _hour(now)
    start = last_hour - timedelta(days=int(booking["daysBack"]))
    devices: dict[str, int] = {}
    production: set[int] = set()
    consumption: set[int] = set()
    accepted = 0
    for entry in fleet["devices"]:
        principal = principals[entry["organization"]]
        body = dict(entry["device"])
        (result,) = register_devices(
            sessions=sessions,
            organization_id=principal.organization_id,
            rows=[(0, body)],
            now=now,
            api_key_id=principal.api_key_id,
        )
        if result.device is None:
            raise ExampleFleetInvalid(
                f"examples: device {body.get('externalId')}: {result.field} {result.reason}"
            )
        device_id = result.device.id
        devices[body["externalId"]] = device_id
        (consumption if entry.get("consumption") else production).add(device_id)
        spec = entry["reads"]
        ingested = ingest_reads(
            sessions=sessions,
            caller=principal,
            external_id=body["externalId"],
            kind=ReadKind(spec["type"]),
            unit=EnergyUnit(spec["unit"]),
            reads=reads_for(spec, int(body["capacity"]), start, last_hour),
            payload={"examples": str(fleet_path.name), "type": spec["type"]},
            policy=policy,
            now=now,
        )
        accepted += len(ingested.batch.accepted_reads)
    new = NewReservation(
        devices=frozenset(production),
        consumption_devices=frozenset(consumption),
        frequency=Frequency(booking["frequency"]),
        start=start,
        end=last_hour + timedelta(days=int(booking["daysAhead"])),
        target_volume_wh=int(booking["targetVolumeWh"]),
        authority_to_exceed=bool(booking["authorityToExceed"]),
        wallet=str(booking["wallet"]),
        gas_tier=Tier(booking["gasTier"]),
    )
    view = create_reservation(sessions=sessions, principal=principals["buyer"], new=new, now=now)
    done = LoadedExamples(
        keys=keys,
        devices=devices,
        reservation_id=view.reservation.id,
        reads_accepted=accepted,
        loaded_at=now,
    )
    _write_marker(var_dir, done)
    return done


def _write_marker(var_dir: Path, result: LoadedExamples) -> None:
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / MARKER
    body = {
        "loadedAt": result.loaded_at.isoformat(),
        "apiKeys": result.keys,
        "devices": result.devices,
        "reservationId": result.reservation_id,
        "readsAccepted": result.reads_accepted,
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(json.dumps(body, indent=2) + "\n")
