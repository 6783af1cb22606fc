"""The models, declared once: name, vector, distance, feed source and what each can do.

Everything that needs "the set of models" derives it from here: the vector schema of a
version (``recsys.vectors``), the nightly job's fitting and publishing list
(``pipelines.train``), the artifacts a version holds (``recsys.release``), and the feed's
candidate sources and blend columns (``recsys.serving``). Adding a model is one module with
its class plus one ``register(ModelSpec(...))``.

This module imports nothing heavy: a spec names its class as ``"module:Class"`` and the
class is imported when a model is first built or loaded, so the vector layer can read
distances without importing implicit or LightFM.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

Distance = Literal["dot", "cosine"]
# "embedding": user and item vectors, published to the vector index. "neighbours": an
# item-to-item matrix kept in the version's artifacts and read in memory.
Kind = Literal["embedding", "neighbours"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model the nightly job fits and the feed uses.

    ``name`` is the artifact directory, the Qdrant named vector and the report row of the
    model. ``model_class`` (``"module:Class"``) is an ``EmbeddingModel`` whose vectors'
    dot product (or cosine, per ``distance``) is its score. ``source`` names the feed's
    candidate source and blend column it fills (None: trained and published, not served).
    """

    name: str
    model_class: str
    distance: Distance | None
    source: str | None
    # The Settings attribute holding the model's config (None: the class's defaults).
    config: str | None = None
    # The feed folds the user in from their live history (``fold_in_user``) and asks for
    # the items nearest to that vector; otherwise it asks for items like the user's recent
    # positives and unlike their negatives (a recommend query on the stored item vectors).
    folds_in_user: bool = False
    # The model embeds an item from its fields alone (``embed_items``), so an item upserted
    # after training gets this vector at once.
    embeds_items: bool = False
    # The quality gate fits this model on all but the newest events before publishing.
    gated: bool = False
    # Blend weights (warm, cold) used when the feed config names none for this source.
    default_weights: tuple[float, float] = (0.0, 0.0)
    kind: Kind = "embedding"

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"model name must be an identifier, got {self.name!r}")
        if self.kind == "embedding" and self.distance not in ("dot", "cosine"):
            raise ValueError(f"distance must be dot or cosine, got {self.distance!r}")
        if self.kind == "neighbours" and self.distance is not None:
            raise ValueError("a neighbours model publishes no vectors: its distance is None")
        if ":" not in self.model_class:
            raise ValueError(f"model_class must be 'module:Class', got {self.model_class!r}")

    @property
    def vector(self) -> str:
        """The named vector the model publishes (its name)."""
        return self.name

    @property
    def publishes_vectors(self) -> bool:
        return self.kind == "embedding"

    def load_class(self) -> Any:
        module, _, attribute = self.model_class.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def create(self, settings: Any) -> Any:
        """A new, unfitted model configured from ``settings``."""
        cls = self.load_class()
        config = getattr(settings, self.config) if self.config else None
        return cls(config, name=self.name)

    def load(self, directory: Any) -> Any:
        return self.load_class().load(directory)


_BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="als",
        model_class="recsys.models.als:ALSModel",
        # Dot products reproduce the factorisation's scores.
        distance="dot",
        source="behavioural",
        config="als",
        folds_in_user=True,
        gated=True,
    ),
    ModelSpec(
        name="hybrid",
        model_class="recsys.models.hybrid:HybridModel",
        distance="dot",
        source="hybrid",
        config="hybrid",
        embeds_items=True,
    ),
    ModelSpec(
        name="content",
        model_class="recsys.models.content:ContentModel",
        # Text embeddings compare by angle.
        distance="cosine",
        source="content",
        config="content",
        embeds_items=True,
    ),
    ModelSpec(
        name="item2item",
        model_class="recsys.models.item2item:ItemToItemModel",
        distance=None,
        source="item2item",
        config="item2item",
        kind="neighbours",
        # Not in the hand blend until weighed on validation data (the learned ranker's
        # job): a source with no weight is not even asked.
        default_weights=(0.0, 0.0),
    ),
)

_lock = threading.Lock()
_specs: dict[str, ModelSpec] = {spec.name: spec for spec in _BUILTIN}
# Read on every feed request, so kept as ready tuples that a change replaces whole: readers
# take no lock and always see one consistent set.
_snapshot: tuple[ModelSpec, ...] = _BUILTIN
_derived: dict[str, Any] = {}

# The feed sources that are not models of their own: "fresh" (new items near the user's
# content profile, or the newest items) and "popular" (the popularity model).
FRESH_SOURCE = "fresh"
POPULAR_SOURCE = "popular"
CONTENT_MODEL = "content"
GATED_BASELINE = "popularity"


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model; training, publishing and serving pick it up from then on."""
    with _lock:
        if spec.name in _specs or spec.name == GATED_BASELINE:
            raise ValueError(f"a model named {spec.name!r} is already registered")
        if spec.source is not None and spec.source in {
            *(s.source for s in _specs.values()),
            FRESH_SOURCE,
            POPULAR_SOURCE,
        }:
            raise ValueError(f"the feed source {spec.source!r} is taken")
        _specs[spec.name] = spec
        _changed()
    return spec


def unregister(name: str) -> None:
    if any(spec.name == name for spec in _BUILTIN):
        raise ValueError(f"{name!r} is a built-in model")
    with _lock:
        _specs.pop(name, None)
        _changed()


def _changed() -> None:
    global _snapshot, _derived
    _snapshot, _derived = tuple(_specs.values()), {}


@contextmanager
def registered(spec: ModelSpec) -> Iterator[ModelSpec]:
    """``register`` for the length of a block (tests, experiments)."""
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec.name)


def specs() -> tuple[ModelSpec, ...]:
    """Every registered model, in registration order (built-ins first)."""
    return _snapshot


def _cached(key: str, build: Callable[[tuple[ModelSpec, ...]], Any]) -> Any:
    derived = _derived
    if key not in derived:
        derived[key] = build(_snapshot)
    return derived[key]


def get(name: str) -> ModelSpec:
    try:
        return _specs[name]
    except KeyError:
        raise KeyError(f"no model named {name!r} is registered") from None


def names() -> tuple[str, ...]:
    return tuple(spec.name for spec in specs())


def distances() -> dict[str, Distance]:
    """The distance of every named vector a version may hold."""
    found: dict[str, Distance] = _cached(
        "distances",
        lambda all_: {s.vector: s.distance for s in all_ if s.distance is not None},
    )
    return dict(found)


def served() -> tuple[ModelSpec, ...]:
    """The models that are feed sources, in blend-column order."""
    found: tuple[ModelSpec, ...] = _cached(
        "served", lambda all_: tuple(spec for spec in all_ if spec.source is not None)
    )
    return found


def model_sources() -> frozenset[str]:
    """The feed sources that are models (not fresh or popular)."""
    found: frozenset[str] = _cached(
        "model_sources", lambda _: frozenset(s.source for s in served() if s.source)
    )
    return found


def gated() -> ModelSpec:
    return next(spec for spec in specs() if spec.gated)


def feed_sources() -> tuple[str, ...]:
    """Every blend column of the feed: one per served model, then fresh and popular."""
    found: tuple[str, ...] = _cached(
        "feed_sources",
        lambda _: (*(s.source for s in served() if s.source), FRESH_SOURCE, POPULAR_SOURCE),
    )
    return found


def by_source(source: str) -> ModelSpec:
    for spec in served():
        if spec.source == source:
            return spec
    raise KeyError(f"no model serves the source {source!r}")


__all__ = [
    "CONTENT_MODEL",
    "FRESH_SOURCE",
    "POPULAR_SOURCE",
    "Distance",
    "ModelSpec",
    "by_source",
    "distances",
    "feed_sources",
    "gated",
    "get",
    "model_sources",
    "names",
    "register",
    "registered",
    "served",
    "specs",
    "unregister",
]
