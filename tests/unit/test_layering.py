"""The directions of dependency DESIGN.md §2 asks for, checked on the source: ``service`` never
imports ``workers``; ``simulator`` imports neither (it must be able to catch their protocol
mistakes); neither imports the command line that wires them together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "service": {"workers", "simulator", "capture_relay"},
    "workers": {"simulator", "capture_relay"},
    "simulator": {"service", "workers", "capture_relay"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_it_may(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_check_sees_imports() -> None:
    assert imported_packages(ROOT / "workers" / "capture_calls.py") >= {"service", "workers", "httpx2"}
