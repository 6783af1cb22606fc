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
    # The model declarations sit under everything that derives from them.
    "recsys.registry": ("recsys.",),
    "recsys.columns": ("recsys.",),
    "recsys.events": ("recsys.store", "recsys.models", "recsys.vectors", "recsys.serving"),
    "recsys.store": (
        "recsys.serving",
        "recsys.release",
        "recsys.models",
        "recsys.vectors",
        "recsys.evaluation",
        "recsys.signals",
    ),
    "recsys.models": (
        "recsys.store",
        "recsys.vectors",
        "recsys.serving",
        "recsys.release",
        "recsys.evaluation",
    ),
    "recsys.vectors": (
        "recsys.store",
        "recsys.models",
        "recsys.serving",
        "recsys.release",
        "recsys.evaluation",
    ),
    "recsys.evaluation": ("recsys.store", "recsys.vectors", "recsys.serving", "recsys.release"),
    "recsys.signals": (
        "recsys.store",
        "recsys.vectors",
        "recsys.serving",
        "recsys.models",
        "recsys.release",
    ),
    "recsys.release": ("recsys.serving", "recsys.evaluation"),
    "recsys.serving": ("recsys.evaluation",),
    "pipelines": ("recsys.api", "recsys.cli", *WEB),
}
ENTRY_POINTS = {"recsys.cli", "recsys.api"}


def module_name(path: Path, root: Path | None = None) -> str:
    parts = path.relative_to(root or ROOT).with_suffix("").parts
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
        "from pipelines.train import train\nimport fastapi\nfrom ..serving import Recommender\n"
        "from recsys import api\nfrom . import engine\n"
    )
    found = imports(bad, "recsys.store")
    assert {
        "pipelines.train",
        "fastapi",
        "recsys.serving",
        "recsys.api",
        "recsys.store.engine",
    } <= (found)


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("recsys.store", "from ..serving import Recommender\n"),
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


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``recsys`` it imports, lazy imports included. ``from a
    import b`` points at the module ``a.b`` when there is one, else at ``a``."""
    paths = {module_name(p, root): p for p in root.joinpath("recsys").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in imports(path, package):
            parent = imported.rpartition(".")[0]
            if imported in paths:
                targets.add(imported)
            elif parent in paths:
                targets.add(parent)
        # A module reached as ``a.b`` is never a dependency on its own package ``a``.
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circles_in_the_library() -> None:
    assert import_cycles(import_graph(ROOT)) == []


def test_the_circle_check_finds_a_lazy_circle(tmp_path: Path) -> None:
    package = tmp_path / "recsys" / "things"
    package.mkdir(parents=True)
    (tmp_path / "recsys" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from recsys.things.front import make\n")
    (package / "front.py").write_text(
        "def make():\n    from recsys.things.back import Back\n    return Back()\n"
    )
    (package / "back.py").write_text("from recsys.things import front\n\nclass Back: ...\n")
    (package / "alone.py").write_text("import recsys.things.back\n")
    assert import_cycles(import_graph(tmp_path)) == [["recsys.things.back", "recsys.things.front"]]
