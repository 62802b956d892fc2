"""Certificate headers kept by the issuer, keyed by their keccak256 (DESIGN.md §7).

`certificate_headers`: one row per header this issuer minted, the canonical JSON bytes as
text, keyed by `data_hash` (0x-prefixed lower-case hex). The issuance service writes a
header in the same transaction as the issuance item that carries its hash; the mirror
joins certificates to their header by `data_hash`. Rows are never updated or deleted: a
header is the certificate an auditor checks, as long as the certificate exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import DateTime, String, Text, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from granular.adapters.db.base import Base


class CertificateHeaderRow(Base):
    __tablename__ = "certificate_headers"

    data_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    header_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def put_headers(*, session: Session, headers: Iterable[tuple[str, bytes]], now: datetime) -> None:
    """Store (data_hash hex, canonical bytes) pairs; a hash already stored is left as is
    (the same hash is the same header). Not committed here."""
    wanted = {digest: canonical for digest, canonical in headers}
    if not wanted:
        return
    stored = set(
        session.scalars(
            select(CertificateHeaderRow.data_hash).where(
                CertificateHeaderRow.data_hash.in_(list(wanted))
            )
        )
    )
    rows = [
        {"data_hash": digest, "header_json": canonical.decode("utf-8"), "created_at": now}
        for digest, canonical in wanted.items()
        if digest not in stored
    ]
    if rows:
        # One executemany, not one ORM object per header (24,000 headers a pass).
        session.execute(insert(CertificateHeaderRow), rows)


def get_headers(*, session: Session, hashes: Iterable[str]) -> dict[str, str]:
    """The canonical JSON of each known hash (unknown hashes are absent from the result)."""
    wanted = list(set(hashes))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        rows = session.execute(
            select(CertificateHeaderRow.data_hash, CertificateHeaderRow.header_json).where(
                CertificateHeaderRow.data_hash.in_(chunk)
            )
        ).tuples()
        # Not found.update(rows): a Result has .keys(), so dict.update would index it.
        found.update((digest, header) for digest, header in rows)
    return found
