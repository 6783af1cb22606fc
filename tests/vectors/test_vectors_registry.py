"""Vector names and distances come from the model registry, read at each call."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recsys import registry
from recsys.registry import ModelSpec
from recsys.vectors import VectorIndex, vector_distance
from recsys.vectors.base import check_vector_name, validate_dims
from recsys.vectors.edge import EdgeIndex

PACKAGE = Path(__file__).resolve().parents[2] / "recsys" / "vectors"

TRIAL = ModelSpec(name="trial", model_class="trial.module:Trial", distance="cosine", source=None)


def test_distances_of_the_built_in_models() -> None:
    assert vector_distance("als") == "dot"
    assert vector_distance("hybrid") == "dot"
    assert vector_distance("content") == "cosine"
    with pytest.raises(ValueError, match=r"unknown vector name 'bogus'; expected one of \("):
        vector_distance("bogus")


def test_a_model_registered_later_is_accepted_while_it_is_registered() -> None:
    with pytest.raises(ValueError, match="unknown vector name 'trial'"):
        validate_dims({"trial": 3})
    with registry.registered(TRIAL):
        assert vector_distance("trial") == "cosine"
        assert validate_dims({"als": 2, "trial": 3}) == {"als": 2, "trial": 3}
        assert check_vector_name({"trial": 3}, "trial") == 3
    with pytest.raises(ValueError, match="unknown vector name 'trial'"):
        check_vector_name({"trial": 3}, "trial")


@pytest.fixture
def trial_index(backend: str, tmp_path: Path) -> Iterator[VectorIndex]:
    """An index whose only vector belongs to a model registered for the test."""
    with registry.registered(TRIAL):
        if backend == "edge":
            index: VectorIndex = EdgeIndex.create(tmp_path / "trial", {"trial": 3})
        else:
            from qdrant_client import QdrantClient

            from recsys.vectors.client import ClientIndex

            index = ClientIndex.create(QdrantClient(":memory:"), "items_t", "users_t", {"trial": 3})
        yield index
        index.close()


def test_collections_use_the_registered_distance(trial_index: VectorIndex) -> None:
    # By dot product "long" would win; by angle "aligned" does.
    trial_index.upsert_items(
        ["aligned", "long"], {"trial": np.array([[1.0, 0.0, 0.0], [10.0, 10.0, 0.0]])}
    )
    hits = trial_index.search("trial", np.array([2.0, 0.0, 0.0]), limit=2, exact=True)
    assert [h.item_id for h in hits] == ["aligned", "long"]
    assert hits[0].score == pytest.approx(1.0)
    assert hits[1].score == pytest.approx(np.sqrt(0.5))


def _imports(path: Path) -> set[str]:
    """The ``recsys.vectors`` modules ``path`` imports, at any depth (lazy ones included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n.rpartition(".")[2] for n in names if n.startswith("recsys.vectors."))
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    return found & modules


def test_the_vector_modules_import_each_other_without_a_circle() -> None:
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert "edge" not in graph["versions"] and "client" not in graph["versions"]

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        return seen

    circles = sorted(module for module in graph if module in reach(module))
    assert circles == []
