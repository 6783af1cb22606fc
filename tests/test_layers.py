"""The layers import one way only (see ARCHITECTURE.md); an upward import fails here."""

from __future__ import annotations

import ast
import sys
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


def imports(path: Path, package: str = "") -> set[str]:
    """Every module ``path`` imports, as absolute names: relative imports are resolved
    against ``package`` (the importing module's package), and ``from a import b`` counts as
    both ``a`` and ``a.b``, since ``b`` may be a module (``from recsys import api``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(p for p in base_parts if p)
                module = ".".join(p for p in (base, node.module or "") if p)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


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
        for imported in imports(path, package_of(path)):
            for prefix in banned:
                assert not (imported == prefix or imported.startswith(prefix + ".")), (
                    f"{name} imports {imported}, which sits above it"
                )


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from pipelines.train import train\nimport fastapi\nfrom ..feed import Recommender\n"
        "from recsys import api\nfrom . import engine\n"
    )
    found = imports(bad, "recsys.store")
    assert {"pipelines.train", "fastapi", "recsys.feed", "recsys.api", "recsys.store.engine"} <= (
        found
    )


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("recsys.store", "from ..feed import Recommender\n"),
        ("recsys.store", "from recsys import vectors\n"),
        ("pipelines", "from recsys import api\n"),
        ("recsys.models", "import recsys.store.engine\n"),
    ],
)
def test_the_rule_fails_on_each_kind_of_upward_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, source: str
) -> None:
    # The same rule as test_imports_point_down_only, run on a planted module.
    root = tmp_path / "repo"
    module = root.joinpath(*package.split("."), "planted.py")
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    with pytest.raises(AssertionError, match="sits above it"):
        test_imports_point_down_only(module)
