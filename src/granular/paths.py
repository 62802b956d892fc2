"""Where the project's non-Python files live (contracts, artifacts, deployments, node_modules)."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout that holds `contracts/` and `node_modules/`.

    `GRANULAR_HOME` wins; otherwise the first parent of this package that has `contracts/`
    (true for a checkout and an editable install).
    """
    home = os.environ.get("GRANULAR_HOME")
    if home:
        return Path(home).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "contracts").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    return Path.cwd()


def artifacts_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "contracts" / "build"


def deployments_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "deployments"
