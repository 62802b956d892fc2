"""Run the benchmarks in bench/bench_*.py, print their figures, write bench/report.json.

Each module has `run() -> dict` returning named figures (and the targets they are held to).
`python scripts/bench.py gas outbox` runs only those.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    wanted = set(argv)
    report_path = BENCH_DIR / "report.json"
    report: dict[str, Any] = {}
    if wanted and report_path.is_file():  # a partial run keeps the other sections
        report = json.loads(report_path.read_text())
    report["machine"] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        figures = _load(path).run()
        figures["elapsed_s"] = round(time.perf_counter() - started, 2)
        report[name] = figures
        print(json.dumps(figures, indent=2), flush=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
