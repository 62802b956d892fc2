"""One home per rule: the API's layering and the shared error base, checked on the source.

Each test fails when a second copy comes back (a router importing `adapters.db`, a
second role check, a leaf re-implementing the (field, value, rule) constructor)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from granular.domain.addresses import InvalidAddress
from granular.domain.devices import DeviceFieldInvalid
from granular.domain.energy import InvalidMaxEnergyPolicy
from granular.domain.gas import FeeError, FeePolicyInvalid
from granular.errors import ConfigurationError, FieldRuleError, GranularError, ValidationError
from granular.services.commands import InvalidField
from granular.services.outbox import InvalidRequest
from granular.services.outbox_config import OutboxConfigInvalid

SRC = Path(__file__).resolve().parents[2] / "src" / "granular"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path",
    sorted((SRC / "api").rglob("*.py")),
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_the_api_imports_services_never_the_database_adapters(path: Path) -> None:
    offending = [m for m in _imports(path) if m.startswith("granular.adapters")]
    assert offending == [], f"{path.name} imports {offending}; go through a service"


def test_there_is_one_role_check() -> None:
    homes = [
        path.relative_to(SRC)
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(a, ast.Attribute) and a.attr == "role" for a in ast.walk(node))
        and any(
            isinstance(n, ast.Raise)
            and isinstance(n.exc, ast.Call)
            and getattr(n.exc.func, "id", "") == "Forbidden"
            for n in ast.walk(node)
        )
    ]
    assert homes == [Path("services/accounts.py")]


@pytest.mark.parametrize(
    ("leaf", "kind"),
    [
        (FeeError, ValidationError),
        (FeePolicyInvalid, ConfigurationError),
        (OutboxConfigInvalid, ConfigurationError),
        (InvalidRequest, ValidationError),
        (InvalidField, ValidationError),
        (InvalidMaxEnergyPolicy, ConfigurationError),
        (InvalidAddress, ValidationError),
        (DeviceFieldInvalid, ValidationError),
    ],
    ids=lambda v: v.__name__,
)
def test_field_value_rule_errors_share_one_base(
    leaf: type[FieldRuleError], kind: type[GranularError]
) -> None:
    assert issubclass(leaf, FieldRuleError) and issubclass(leaf, kind)
    error = leaf("someField", "0x1", "a rule")
    assert (error.field, error.value, error.rule) == ("someField", "0x1", "a rule")
    assert {"field": "someField", "value": "0x1", "rule": "a rule"}.items() <= error.details.items()


def test_no_leaf_copies_the_field_value_rule_constructor() -> None:
    """A class that sets `self.field`, `self.value` and `self.rule` itself is a copy of
    FieldRuleError's constructor."""
    copies = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                assigned = {
                    t.attr
                    for n in ast.walk(node)
                    if isinstance(n, ast.Assign)
                    for t in n.targets
                    if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"
                }
                if {"field", "value", "rule"} <= assigned:
                    copies.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert [c for c in copies if not c.startswith("errors.py:")] == []
