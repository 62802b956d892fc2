"""Reports buyers publish (issue 9): claimed energy per consumption wallet and period, its
origin, and the hourly matching chart.

All figures come from the registry mirror (what the chain says): claims joined with their
production certificate's header (fuelCode, techCode, country, device), certificates of
both kinds issued to the wallets. Who sees what: a buyer its own organization's wallets
(the wallets of its reservations), an issuer or a viewer every wallet; a device owner none.
Pure shaping (buckets, breakdowns, CSV, SVG) is in functions of values.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session, sessionmaker

from granular.adapters.db import matching as db
from granular.adapters.db.accounts import Principal
from granular.domain.matching import score
from granular.errors import Forbidden, ValidationError
from granular.services.accounts import Role, require_role
from granular.services.matching import score_text
from granular.services.mirror import checksum_public_key

MAX_BUCKETS = 24 * 92  # a quarter of hours; longer periods take a coarser resolution


class Resolution(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"
    MONTHLY = "monthly"


class PeriodInvalid(ValidationError):
    code = "report_period_invalid"

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(
            f"{field}={value} breaks the rule: {rule}",
            {"field": field, "value": str(value), "rule": rule},
        )


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    resolution: Resolution


def bucket(moment: datetime, resolution: Resolution) -> datetime:
    moment = moment.astimezone(UTC)
    if resolution is Resolution.HOURLY:
        return moment.replace(minute=0, second=0, microsecond=0)
    if resolution is Resolution.DAILY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def buckets(period: Period) -> list[datetime]:
    out = []
    current = bucket(period.start, period.resolution)
    while current < period.end:
        out.append(current)
        if period.resolution is Resolution.HOURLY:
            current += timedelta(hours=1)
        elif period.resolution is Resolution.DAILY:
            current += timedelta(days=1)
        else:
            year, month = divmod(current.month, 12)
            current = current.replace(year=current.year + year, month=month + 1)
    return out


def period_of(
    start: datetime | None, end: datetime | None, resolution: Resolution, now: datetime
) -> Period:
    """Default: the 7 days up to the current hour's end. Checks: end after start, at most
    MAX_BUCKETS buckets."""
    end = end or bucket(now, Resolution.HOURLY) + timedelta(hours=1)
    start = start or end - timedelta(days=7)
    if end <= start:
        raise PeriodInvalid("to", end.isoformat(), "after `from`")
    period = Period(start.astimezone(UTC), end.astimezone(UTC), resolution)
    if len(buckets(period)) > MAX_BUCKETS:
        raise PeriodInvalid(
            "resolution", resolution.value, f"at most {MAX_BUCKETS} buckets: a coarser one"
        )
    return period


def visible_wallets(
    *, sessions: sessionmaker[Session], caller: Principal, wallet: str | None
) -> list[str] | None:
    """The wallets a report covers (None: every wallet)."""
    wanted = checksum_public_key(wallet, "wallet") if wallet is not None else None
    require_role(caller, Role.BUYER, Role.ISSUER, Role.VIEWER)
    if caller.role != Role.BUYER.value:  # the issuer and viewers read every wallet
        return None if wanted is None else [wanted]
    return _own_wallets(sessions=sessions, organization_id=caller.organization_id, wanted=wanted)


def _own_wallets(
    *, sessions: sessionmaker[Session], organization_id: int, wanted: str | None
) -> list[str]:
    """A buyer's wallets (those of its reservations), or `wanted` if it is one of them."""
    with sessions() as session:
        own = {
            checksum_public_key(w)
            for w in db.wallets_of_organization(session=session, organization_id=organization_id)
        }
    if wanted is None:
        return sorted(own)
    if wanted not in own:
        raise Forbidden(
            f"wallet {wanted} is not a wallet of your reservations",
            {"field": "wallet", "value": wanted, "rule": "a buyer reads its own wallets"},
        )
    return [wanted]


# --- claims and origin ----------------------------------------------------------------------


def _claims(
    sessions: sessionmaker[Session], wallets: list[str] | None, period: Period
) -> list[db.ClaimedEnergy]:
    with sessions() as session:
        return db.claimed_energy(
            session=session, wallets=wallets, period_from=period.start, period_to=period.end
        )


def _totals(claims: Iterable[db.ClaimedEnergy], key: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for claim in claims:
        out[str(getattr(claim, key) or "unknown")] += claim.quantity_wh
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class ClaimedBucket:
    """Claimed Wh of one bucket of the period (by its production's period start)."""

    start: datetime
    claimed_wh: int


@dataclass(frozen=True, slots=True)
class ClaimsReport:
    wallets: list[str] | None  # None: every wallet
    period: Period
    claimed_wh: int
    consumed_wh: int
    score: str | None  # claimed / consumed, decimal text; None without consumption
    claims: int  # how many claims
    by_fuel_code: dict[str, int]
    by_tech_code: dict[str, int]
    by_country: dict[str, int]
    by_device: dict[str, int]
    series: list[ClaimedBucket]


@dataclass(frozen=True, slots=True)
class OriginRow:
    start: datetime
    device: str
    fuel_code: str
    tech_code: str
    country: str
    claimed_wh: int


@dataclass(frozen=True, slots=True)
class OriginReport:
    wallets: list[str] | None
    period: Period
    claimed_wh: int
    rows: list[OriginRow]


def claims_report(
    *, sessions: sessionmaker[Session], wallets: list[str] | None, period: Period
) -> ClaimsReport:
    """Claimed energy over the period: totals by fuelCode, techCode, country and device,
    the consumed energy and the matching score (claimed / consumed), and a time series at
    the period's resolution."""
    claims = _claims(sessions, wallets, period)
    with sessions() as session:
        certified = db.certified_energy(
            session=session, wallets=wallets, period_from=period.start, period_to=period.end
        )
    consumed = sum(wh for kind, _, wh in certified if kind == 1)
    claimed = sum(c.quantity_wh for c in claims)
    series: dict[datetime, int] = dict.fromkeys(buckets(period), 0)
    for claim in claims:
        series[bucket(claim.period_start, period.resolution)] += claim.quantity_wh
    return ClaimsReport(
        wallets=wallets,
        period=period,
        claimed_wh=claimed,
        consumed_wh=consumed,
        score=score_text(score(claimed, consumed)),
        claims=len(claims),
        by_fuel_code=_totals(claims, "fuel_code"),
        by_tech_code=_totals(claims, "tech_code"),
        by_country=_totals(claims, "country"),
        by_device=_totals(claims, "asset_id"),
        series=[ClaimedBucket(s, wh) for s, wh in series.items()],
    )


def origin_report(
    *, sessions: sessionmaker[Session], wallets: list[str] | None, period: Period
) -> OriginReport:
    """Where the claimed energy came from: one row per (period bucket, device, fuelCode,
    techCode, country) with its Wh, in that order; a header field the mirror does not know
    is `unknown`."""
    claims = _claims(sessions, wallets, period)
    rows: dict[tuple[datetime, str, str, str, str], int] = defaultdict(int)
    for claim in claims:
        key = (
            bucket(claim.period_start, period.resolution),
            claim.asset_id or "unknown",
            claim.fuel_code or "unknown",
            claim.tech_code or "unknown",
            claim.country or "unknown",
        )
        rows[key] += claim.quantity_wh
    return OriginReport(
        wallets=wallets,
        period=period,
        claimed_wh=sum(c.quantity_wh for c in claims),
        rows=[OriginRow(*key, claimed_wh=wh) for key, wh in sorted(rows.items())],
    )


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, object]]) -> str:
    """Rows of one report as CSV under a header of `columns` (the header alone when there
    is no row); a row key that is not a column is an error, not a dropped value."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# --- the matching chart ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hour:
    start: datetime
    production_wh: int
    consumption_wh: int
    claimed_wh: int


def hourly(
    *, sessions: sessionmaker[Session], wallets: list[str] | None, period: Period
) -> list[Hour]:
    hourly_period = Period(period.start, period.end, Resolution.HOURLY)
    rows = {h: [0, 0, 0] for h in buckets(hourly_period)}
    with sessions() as session:
        certified = db.certified_energy(
            session=session, wallets=wallets, period_from=period.start, period_to=period.end
        )
    for kind, start, wh in certified:
        rows.setdefault(bucket(start, Resolution.HOURLY), [0, 0, 0])[kind] += wh
    for claim in _claims(sessions, wallets, hourly_period):
        rows.setdefault(bucket(claim.period_start, Resolution.HOURLY), [0, 0, 0])[2] += (
            claim.quantity_wh
        )
    return [Hour(h, p, c, m) for h, (p, c, m) in sorted(rows.items())]


def matching_svg(hours: Sequence[Hour], *, title: str) -> str:
    """Production and consumption as lines, claimed energy as bars, per hour, with the
    score in the title. Hand-written SVG: no plotting library."""
    width, height, left, right, top, bottom = 960, 360, 70, 20, 40, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    claimed = sum(h.claimed_wh for h in hours)
    consumed = sum(h.consumption_wh for h in hours)
    value = score_text(score(claimed, consumed))
    top_wh = max([1] + [max(h.production_wh, h.consumption_wh, h.claimed_wh) for h in hours])
    n = max(1, len(hours))
    step = plot_w / n

    def y(wh: int) -> float:
        return top + plot_h - plot_h * wh / top_wh

    def line(values: list[int]) -> str:
        return " ".join(f"{left + step * (i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(values))

    bars = "".join(
        f'<rect x="{left + step * i:.1f}" y="{y(h.claimed_wh):.1f}" '
        f'width="{max(step - 0.5, 0.5):.1f}" height="{top + plot_h - y(h.claimed_wh):.1f}" />'
        for i, h in enumerate(hours)
        if h.claimed_wh
    )
    score_label = "n/a" if value is None else f"{float(value) * 100:.1f} %"
    first = hours[0].start.strftime("%Y-%m-%d %H:%M") if hours else ""
    last = (hours[-1].start + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M") if hours else ""
    ticks = "".join(
        f'<text x="{left - 6}" y="{y(top_wh * k // 4) + 4:.1f}" text-anchor="end">'
        f"{top_wh * k // 4 / 1000:g} kWh</text>"
        for k in range(5)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        f"<title>{_escape(title)}</title>"
        f'<rect width="{width}" height="{height}" fill="white" />'
        f'<text x="{left}" y="22" font-size="15">{_escape(title)}: matching score '
        f"{score_label} ({claimed} of {consumed} Wh claimed)</text>"
        f'<g fill="#9ecae1" class="claimed">{bars}</g>'
        f'<polyline class="production" fill="none" stroke="#31a354" stroke-width="1.5" '
        f'points="{line([h.production_wh for h in hours])}" />'
        f'<polyline class="consumption" fill="none" stroke="#de2d26" stroke-width="1.5" '
        f'points="{line([h.consumption_wh for h in hours])}" />'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="black" />{ticks}'
        f'<text x="{left}" y="{height - 12}">{first} UTC</text>'
        f'<text x="{left + plot_w}" y="{height - 12}" text-anchor="end">{last} UTC</text>'
        f'<g transform="translate({left + plot_w - 330},{top - 12})">'
        f'<rect width="10" height="10" fill="#9ecae1" /><text x="14" y="9">claimed</text>'
        f'<line x1="80" y1="5" x2="100" y2="5" stroke="#31a354" stroke-width="2" />'
        f'<text x="104" y="9">production</text>'
        f'<line x1="180" y1="5" x2="200" y2="5" stroke="#de2d26" stroke-width="2" />'
        f'<text x="204" y="9">consumption</text></g>'
        "</svg>"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
