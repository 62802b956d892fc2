"""D-REC device files (issue 10): rows per second through the pipe/typographic-quote reader
(domain/drec_csv.py), quoted and unquoted, beside Python's C csv reader on the same file
comma separated, and devices per
second through POST /devices/bulk on SQLite for a 5,000-row D-REC file (both creates and
an unchanged re-upload)."""

from __future__ import annotations

import csv
import io
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from granular.adapters.db.engine import make_engine, session_factory
from granular.adapters.db.migrate import upgrade
from granular.api.app import create_app
from granular.domain.drec import DREC_HEADER
from granular.domain.drec_csv import records
from granular.services.accounts import create_api_key

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _row(index: int, separator: str, open_quote: str, close_quote: str) -> str:
    def q(text: str) -> str:
        return f"{open_quote}{text}{close_quote}"

    cells = [
        "1.0",
        q(f"KE-{index:06d}"),
        "",
        "17",
        q("Solar Co Kenya Ltd"),
        q("Jane Wanjiru"),
        q("SunKing"),
        q("Plot 7, Oginga Odinga Rd, Kisumu"),
        "-0.0917",
        "34.768",
        "KEN",
        "40100",
        "ES100",
        "TC120",
        "450",
        "2023-11-02",
        "false",
        "true",
        "1200",
        "Residential",
        q("Lighting Global"),
        q("SDG1, SDG7"),
        q("The family studies after dark with a solar home system."),
        q("https://example.org/a.jpg; https://example.org/b.jpg"),
    ]
    return separator.join(cells)


def _file(rows: int, separator: str, open_quote: str, close_quote: str) -> str:
    lines = [separator.join(DREC_HEADER)]
    lines += [_row(i, separator, open_quote, close_quote) for i in range(rows)]
    return "\n".join(lines) + "\n"


def _reader(rows: int = 50_000) -> dict[str, Any]:
    pipe = _file(rows, "|", "\u201c", "\u201d")
    comma = _file(rows, ",", '"', '"')
    bare = _file(rows, "|", "", "")
    started = time.perf_counter()
    assert sum(1 for _ in records(pipe)) == rows + 1
    ours = time.perf_counter() - started
    started = time.perf_counter()
    assert sum(1 for _ in records(bare)) == rows + 1
    ours_bare = time.perf_counter() - started
    started = time.perf_counter()
    assert sum(1 for _ in csv.reader(io.StringIO(comma))) == rows + 1
    c_reader = time.perf_counter() - started
    return {
        "rows": rows,
        "drec_reader_rows_per_s": round(rows / ours),
        "drec_reader_unquoted_rows_per_s": round(rows / ours_bare),
        "csv_module_rows_per_s": round(rows / c_reader),
    }


def _api(rows: int = 5_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        sessions = session_factory(engine)
        key = create_api_key(
            sessions=sessions, organization="Bench", role="device_owner", label=None, now=NOW
        ).key
        app = create_app(sessions=sessions, clock=lambda: NOW, max_body_bytes=64_000_000)
        body = _file(rows, "|", "\u201c", "\u201d").encode()
        figures: dict[str, Any] = {"rows": rows, "file_bytes": len(body)}
        with TestClient(app) as client:
            for label in ("create", "unchanged"):
                started = time.perf_counter()
                answer = client.post(
                    "/devices/bulk",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"file": ("devices.csv", body, "text/csv")},
                )
                elapsed = time.perf_counter() - started
                assert answer.status_code == 200, answer.text[:500]
                summary = answer.json()["summary"]
                assert summary["rejected"] == 0, summary
                figures[f"{label}_devices_per_s"] = round(rows / elapsed)
        engine.dispose()
        return figures


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"reader": _reader()}
    print(f"  reader: {figures['reader']}", flush=True)
    figures["api_sqlite"] = _api()
    print(f"  api sqlite: {figures['api_sqlite']}", flush=True)
    return figures
