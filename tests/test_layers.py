"""The packages depend one way: replacement -> attribution -> circuits (toy -> data -> graph ->
evaluation, labels -> app), and viz imports none of them. Read from the source's import statements,
including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module prefix -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "replacement": ("attribution", "circuits", "viz"),
    "attribution": ("circuits", "viz"),
    "viz": ("replacement", "attribution", "circuits"),
    "circuits.toy": ("circuits.data", "circuits.graph", "circuits.evaluation", "circuits.labels", "circuits.app"),
    "circuits.data": ("circuits.graph", "circuits.evaluation", "circuits.labels", "circuits.app", "viz"),
    "circuits.graph": ("circuits.evaluation", "circuits.labels", "circuits.app", "viz"),
    "circuits.evaluation": ("circuits.labels", "circuits.app", "viz"),
    "circuits.labels": ("circuits.evaluation", "circuits.app", "viz"),
    "circuits.errors": ("circuits.", "replacement", "attribution", "viz"),
    "circuits.files": ("circuits.data", "circuits.graph", "circuits.evaluation", "circuits.labels", "circuits.app"),
    "circuits.locks": ("circuits.data", "circuits.graph", "circuits.evaluation", "circuits.labels", "circuits.app"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _within(module: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return module.startswith(prefix)
    return module == prefix or module.startswith(prefix + ".")


SOURCES = sorted(p for pkg in ("replacement", "attribution", "circuits", "viz") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path: Path) -> None:
    module = _module_name(path)
    rules = [forbidden for owner, forbidden in FORBIDDEN.items() if _within(module, owner)]
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in _imports(path)
        for forbidden in rules
        for prefix in forbidden
        if _within(name, prefix) and not _within(name, module)
    ]
    assert not wrong, "; ".join(wrong)


def test_every_package_is_covered() -> None:
    """A new subpackage of circuits gets its place in the layering before it lands."""
    placed = {"circuits.app", "circuits.toy", *FORBIDDEN}
    subpackages = {_module_name(p.parent) for p in (ROOT / "circuits").glob("*/__init__.py")}
    assert subpackages <= placed, f"not placed in the layering: {sorted(subpackages - placed)}"
