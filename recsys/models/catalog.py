"""Reading the item catalogue for the feature-based models (hybrid and content).

The catalogue columns are those of ``recsys.columns.ITEM_COLUMNS``; only ``item_id`` is
required here, a missing text column reads as empty so a new item can arrive with just a
title and tags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID
from recsys.dataset import InteractionData

# Words of two or more letters: numbers and one-letter fragments carry no topic.
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{2,}\b"


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def normalize_tag(tag: Any) -> str:
    return " ".join(str(tag).split()).lower()


def normalize_tags(value: Any) -> list[str]:
    """A cell of the ``tags`` column as a list of distinct, lower-cased tags.

    Accepts lists, tuples, sets, numpy arrays (what parquet gives back), a single string,
    and None/NaN for "no tags".
    """
    if _is_missing(value):
        return []
    raw: Iterable[Any] = [value] if isinstance(value, str) else value
    if isinstance(value, np.ndarray):
        raw = value.ravel().tolist()
    tags: list[str] = []
    seen: set[str] = set()
    for tag in raw:
        if _is_missing(tag):
            continue
        clean = normalize_tag(tag)
        if clean and clean not in seen:
            seen.add(clean)
            tags.append(clean)
    return tags


def tags_column(items_df: pd.DataFrame) -> list[list[str]]:
    if "tags" not in items_df.columns:
        return [[] for _ in range(len(items_df))]
    return [normalize_tags(value) for value in items_df["tags"].tolist()]


def text_column(items_df: pd.DataFrame, column: str) -> list[str]:
    """A text column as plain strings (missing column or cell reads as "")."""
    if column not in items_df.columns:
        return [""] * len(items_df)
    return ["" if _is_missing(value) else str(value) for value in items_df[column].tolist()]


def category_column(items_df: pd.DataFrame) -> list[str | None]:
    if "category" not in items_df.columns:
        return [None] * len(items_df)
    categories: list[str | None] = []
    for value in items_df["category"].tolist():
        clean = None if _is_missing(value) else normalize_tag(value)
        categories.append(clean or None)
    return categories


def item_documents(items_df: pd.DataFrame) -> list[str]:
    """One text per item: title, body and tags, for the text encoders."""
    titles = text_column(items_df, "title")
    texts = text_column(items_df, "text")
    tags = tags_column(items_df)
    documents = []
    for title, text, item_tags in zip(titles, texts, tags, strict=True):
        parts = [part.strip() for part in (title, text) if part.strip()]
        if item_tags:
            parts.append(", ".join(item_tags))
        documents.append(". ".join(parts))
    return documents


def catalogue_for(interactions: InteractionData, items: pd.DataFrame) -> pd.DataFrame:
    """The catalogue in id-map order, with bare rows for items seen only in events."""
    frame = items.set_index(ITEM_ID).reindex(interactions.items.external_ids)
    frame["title"] = frame["title"].fillna("")
    frame["text"] = frame["text"].fillna("")
    frame["tags"] = [t if isinstance(t, list) else [] for t in frame["tags"]]
    category = frame["category"].astype(object)
    frame["category"] = category.where(category.notna(), None)
    return frame.rename_axis(ITEM_ID).reset_index()
