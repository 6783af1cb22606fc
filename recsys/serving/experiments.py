"""A/B experiments as the feed sees them: variants, what each changes, and which variant a
user gets.

A user's variant is a hash of (experiment, user): the same in every request, every worker
and every restart, with nothing stored per user. Variants are validated when the
experiment is created, so a running one never fails a request.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from recsys import registry
from recsys.config import FeedConfig

VariantRanker = Literal["auto", "blend", "popularity"]
VARIANT_RANKERS: tuple[VariantRanker, ...] = ("auto", "blend", "popularity")
MAX_NAME_LENGTH = 64
MAX_VARIANTS = 10
# Shares are given as fractions; these absorb the rounding of shares like 1/3.
SHARE_TOLERANCE = 1e-6
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class InvalidExperiment(ValueError):
    """An experiment definition that cannot run; the message says which part."""


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment. Without overrides it is the service as configured."""

    name: str
    share: float
    # A published version that ranks this variant's pages (None: the live one).
    model_version: str | None = None
    # auto: the learned ranker where it passed its gate; blend: the hand blend;
    # popularity: the blend over the popular source only (a baseline arm).
    ranker: VariantRanker | None = None
    # FeedConfig fields to override, e.g. {"mmr_lambda": 0.8}.
    feed: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "share": self.share,
            "model_version": self.model_version,
            "ranker": self.ranker,
            "feed": dict(self.feed),
        }

    def feed_config(self, base: FeedConfig) -> FeedConfig:
        """The feed settings this variant serves with."""
        if not self.feed and self.ranker is None:
            return base
        update = dict(self.feed)
        if self.ranker == "popularity":
            silent = {source: 0.0 for source in registry.feed_sources()}
            popular_only = {**silent, registry.POPULAR_SOURCE: 1.0}
            update.update(
                ranker="blend",
                warm_weights=popular_only,
                cold_weights=popular_only,
                recent_weight=0.0,
            )
        elif self.ranker is not None:
            update["ranker"] = self.ranker
        return FeedConfig.model_validate({**base.model_dump(), **update})


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    status: str = "running"
    started_at: float = 0.0
    stopped_at: float | None = None

    def assign(self, user_id: str) -> Variant:
        """The user's variant: a uniform draw from a hash of (experiment, user), placed on
        the variants' cumulative shares."""
        return self.variants[variant_index(self.name, user_id, self.shares)]

    @property
    def shares(self) -> tuple[float, ...]:
        return tuple(v.share for v in self.variants)

    def pinned_versions(self) -> set[str]:
        return {v.model_version for v in self.variants if v.model_version}


def variant_index(experiment: str, user_id: str, shares: tuple[float, ...]) -> int:
    digest = hashlib.blake2b(
        f"{experiment}\x00{user_id}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    draw = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    total = 0.0
    for index, share in enumerate(shares):
        total += share
        if draw < total:
            return index
    return len(shares) - 1  # shares sum to 1 up to rounding: the last takes the remainder


def parse_experiment(name: object, variants: object, base: FeedConfig) -> Experiment:
    """An experiment from its JSON definition; raises InvalidExperiment naming the problem."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidExperiment(
            f"name must be 1-{MAX_NAME_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not isinstance(variants, list) or not 2 <= len(variants) <= MAX_VARIANTS:
        raise InvalidExperiment(f"variants must be a list of 2 to {MAX_VARIANTS} variants")
    parsed = tuple(_parse_variant(i, raw, base) for i, raw in enumerate(variants))
    names = [v.name for v in parsed]
    if len(set(names)) != len(names):
        raise InvalidExperiment("variant names must be distinct")
    total = sum(v.share for v in parsed)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise InvalidExperiment(f"variant shares must add up to 1 (they add up to {total:g})")
    return Experiment(name=name, variants=parsed)


def _parse_variant(index: int, raw: object, base: FeedConfig) -> Variant:
    where = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise InvalidExperiment(f"{where} must be an object")
    unknown = set(raw) - {"name", "share", "model_version", "ranker", "feed"}
    if unknown:
        raise InvalidExperiment(f"{where} has unknown fields: {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise InvalidExperiment(f"{where}.name must be 1-{MAX_NAME_LENGTH} letters, digits, .-_")
    share = raw.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise InvalidExperiment(f"{where}.share must be a number in (0, 1]")
    version = raw.get("model_version")
    if version is not None and (not isinstance(version, str) or not version):
        raise InvalidExperiment(f"{where}.model_version must be a version name")
    ranker = raw.get("ranker")
    if ranker is not None and ranker not in VARIANT_RANKERS:
        raise InvalidExperiment(f"{where}.ranker must be one of {list(VARIANT_RANKERS)}")
    feed = raw.get("feed") or {}
    if not isinstance(feed, dict):
        raise InvalidExperiment(f"{where}.feed must be an object of feed settings")
    unknown = set(feed) - set(FeedConfig.model_fields)
    if unknown:
        raise InvalidExperiment(f"{where}.feed has unknown settings: {sorted(unknown)}")
    variant = Variant(
        name=name, share=float(share), model_version=version, ranker=ranker, feed=dict(feed)
    )
    try:
        variant.feed_config(base)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidExperiment(f"{where}.feed: {problems}") from None
    return variant


def experiment_from_row(row: dict[str, Any]) -> Experiment:
    """An experiment as stored (``recsys.store.experiments``); stored ones were validated."""
    return Experiment(
        name=row["name"],
        variants=tuple(
            Variant(
                name=v["name"],
                share=float(v["share"]),
                model_version=v.get("model_version"),
                ranker=v.get("ranker"),
                feed=dict(v.get("feed") or {}),
            )
            for v in row["variants"]
        ),
        status=row["status"],
        started_at=float(row["started_at"]),
        stopped_at=row.get("stopped_at"),
    )
