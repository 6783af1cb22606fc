"""Items upserted while a version serves: embedded with the version's own encoders, indexed
into its vector index and added to its catalogue, so they can be recommended at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recsys import registry
from recsys.columns import ITEM_ID
from recsys.serving.catalogue import extend_catalogue, unit
from recsys.serving.state import ServingState


def index_items(state: ServingState, items: pd.DataFrame) -> None:
    """Index ``items`` into ``state`` and publish its grown catalogue; hold ``state.lock``.

    Models that embed an item from its fields (content, hybrid) give every item a vector;
    the others (ALS) only have one for items they were trained on. A point is replaced
    whole, so a trained item keeps its behavioural vector: items are upserted in groups
    of the same known models, one upsert per group.
    """
    items = items.reset_index(drop=True)
    catalogue = state.catalogue
    retired = items["retired"].eq(True).to_numpy() if "retired" in items else None
    if retired is not None and retired.any():
        # Out of circulation: no query can return a point that is not there.
        state.index.delete_items(items.loc[retired, ITEM_ID].astype(str).tolist())
    ids = items[ITEM_ID].astype(str).tolist()
    embedded: dict[str, np.ndarray] = {}
    known: dict[str, np.ndarray] = {}
    for spec in registry.specs():
        model = state.models.get(spec.name)
        if model is None or not spec.publishes_vectors:
            continue
        if spec.embeds_items:
            embedding = np.asarray(model.embed_items(items), dtype=np.float32)
            embedded[spec.vector] = (
                unit(embedding).astype(np.float32) if spec.distance == "cosine" else embedding
            )
        elif model.items is not None and model.item_factors is not None:
            known[spec.vector] = model.items.to_internal(ids, strict=False)
    payloads = [
        _payload(item_id, row, catalogue)
        for item_id, row in zip(ids, items.to_dict("records"), strict=True)
    ]
    groups: dict[tuple[str, ...], list[int]] = {}
    for position in range(len(ids)):
        if retired is not None and retired[position]:
            continue
        names = tuple(name for name, columns in known.items() if columns[position] >= 0)
        groups.setdefault(names, []).append(position)
    for names, positions in groups.items():
        part = np.asarray(positions)
        vectors = {name: values[part] for name, values in embedded.items()}
        for name in names:
            vectors[name] = state.models[name].item_factors[known[name][part]]
        state.index.upsert_items([ids[i] for i in part], vectors, [payloads[i] for i in part])
    content = embedded[registry.CONTENT_MODEL]
    state.catalogue = extend_catalogue(catalogue, items, content, state.fold_in_models())


def _payload(item_id: str, row: dict[str, Any], catalogue: Any) -> dict[str, Any]:
    created = row.get("created_at")
    return {
        "item_id": item_id,
        "category": row.get("category"),
        "tags": list(row.get("tags") or []),
        # NaN (unknown) is absent, not a number.
        "created_at": created if created == created else None,
        "popularity": float(catalogue.popularity[catalogue.index[item_id]])
        if item_id in catalogue.index
        else 0.0,
    }
