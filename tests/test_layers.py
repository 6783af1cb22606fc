"""The layers import one way only (see ARCHITECTURE.md); an upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ("fastapi", "starlette", "uvicorn")

# Package (or module) -> prefixes it must never import.
FORBIDDEN = {
    "recsys": ("pipelines", "recsys.api", "recsys.cli", *WEB),
    "recsys.store": (
        "recsys.feed",
        "recsys.models",
        "recsys.vectors",
        "recsys.evaluation",
        "recsys.signals",
    ),
    "recsys.models": ("recsys.store", "recsys.vectors", "recsys.feed", "recsys.evaluation"),
    "recsys.vectors": ("recsys.store", "recsys.models", "recsys.feed", "recsys.evaluation"),
    "recsys.evaluation": ("recsys.store", "recsys.vectors", "recsys.feed"),
    "recsys.signals": ("recsys.store", "recsys.vectors", "recsys.feed", "recsys.models"),
    "pipelines": ("recsys.api", "recsys.cli", *WEB),
}
ENTRY_POINTS = {"recsys.cli", "recsys.api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def sources() -> list[Path]:
    return sorted(
        [*ROOT.joinpath("recsys").rglob("*.py"), *ROOT.joinpath("pipelines").rglob("*.py")]
    )


@pytest.mark.parametrize("path", sources(), ids=lambda p: module_name(p))
def test_imports_point_down_only(path: Path) -> None:
    name = module_name(path)
    if any(name == e or name.startswith(e + ".") for e in ENTRY_POINTS):
        return
    for package, banned in FORBIDDEN.items():
        if name != package and not name.startswith(package + "."):
            continue
        for imported in imports(path):
            for prefix in banned:
                assert not (imported == prefix or imported.startswith(prefix + ".")), (
                    f"{name} imports {imported}, which sits above it"
                )


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from pipelines.train import train\nimport fastapi\n")
    assert {"pipelines.train", "fastapi"} <= imports(bad)
