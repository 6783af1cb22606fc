"""Data and helpers for the model tests: a two-block catalogue with known right answers.

Two groups of users each like one half of the catalogue ("space" items and "cooking" items).
Every item's tags, category and words match its block. Each user leaves one item of their
own block untouched (the held-out item, known to the rest of the group), and some users skip
or dislike an item of the other block (negative confidence). Two more items, one per block,
have no interactions at all: the cold items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.columns import ITEM_ID, USER_ID, WEIGHT
from recsys.dataset import IdMap, InteractionData
from recsys.models.als import ALSModel, cuda_available
from recsys.models.base import EmbeddingModel
from recsys.models.configs import ALSConfig, ContentConfig, HybridConfig
from recsys.models.content import ContentModel
from recsys.models.hybrid import HybridModel

ITEMS_PER_BLOCK = 8
USERS_PER_GROUP = 30

SPACE_WORDS = ["galaxy", "rocket", "orbit", "astronaut", "planet", "nebula", "comet", "lunar"]
FOOD_WORDS = ["recipe", "kitchen", "chef", "pasta", "baking", "spices", "dinner", "flavour"]


def _item(item_id: str, block: str, i: int, *, cold: bool = False) -> dict[str, object]:
    words = SPACE_WORDS if block == "space" else FOOD_WORDS
    picked = [words[(i + j) % len(words)] for j in range(4)]
    if block == "space":
        title = f"{picked[0].title()} {picked[1]} chronicles"
        tags: list[str] | None = ["space", "scifi"] if i % 3 else ["space", "scifi", "stars"]
        category: str | None = "science"
    else:
        title = f"{picked[0].title()} {picked[1]} at home"
        tags = ["cooking", "food"] if i % 3 else ["cooking", "food", "kitchen"]
        category = "lifestyle"
    text = f"A story about {' and '.join(picked)}. Episode {i} of the {block} series."
    if cold:
        title = f"New {picked[2]} special"
    return {
        ITEM_ID: item_id,
        "title": title,
        "text": text,
        "tags": tags,
        "category": category,
        "created_at": 1_700_000_000.0 + i,
        "duration_seconds": float("nan") if i % 2 else 600.0,
    }


@dataclass(frozen=True)
class Blocks:
    interactions: InteractionData
    items_df: pd.DataFrame
    space_items: np.ndarray  # warm item indices of the space block
    food_items: np.ndarray
    cold_space: int  # item index of the cold space item
    cold_food: int
    space_users: np.ndarray
    food_users: np.ndarray
    held_out: np.ndarray  # per user index: the item of their block they never touched

    def own_block(self, user: int) -> np.ndarray:
        return self.space_items if user in set(self.space_users.tolist()) else self.food_items

    def other_block(self, user: int) -> np.ndarray:
        return self.food_items if user in set(self.space_users.tolist()) else self.space_items


def make_blocks(seed: int = 0) -> Blocks:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(ITEMS_PER_BLOCK):
        rows.append(_item(f"space-{i}", "space", i))
    for i in range(ITEMS_PER_BLOCK):
        rows.append(_item(f"food-{i}", "food", i))
    rows.append(_item("space-new", "space", 3, cold=True))
    rows.append(_item("food-new", "food", 5, cold=True))
    items_df = pd.DataFrame(rows)
    item_map = IdMap(items_df[ITEM_ID])

    events = []
    held_out: dict[str, str] = {}
    for group, other in (("space", "food"), ("food", "space")):
        # Every item is held out by at least one user, in an order that differs per group.
        skips = rng.permutation(np.arange(USERS_PER_GROUP) % ITEMS_PER_BLOCK)
        for u in range(USERS_PER_GROUP):
            user = f"{group}-fan-{u}"
            skip = int(skips[u])
            held_out[user] = f"{group}-{skip}"
            for i in range(ITEMS_PER_BLOCK):
                if i == skip:
                    continue
                # likes (4), full views (2) and partial views (~1), as the signal layer emits.
                weight = float(rng.choice([4.0, 2.0, 1.0, 2.0]))
                events.append((user, f"{group}-{i}", weight))
            if u % 2 == 0:
                events.append((user, f"{other}-{(u + 1) % ITEMS_PER_BLOCK}", -1.0))
            if u % 3 == 0:
                events.append((user, f"{other}-{(u + 4) % ITEMS_PER_BLOCK}", -4.0))
    weights = pd.DataFrame(events, columns=[USER_ID, ITEM_ID, WEIGHT])
    interactions = InteractionData.from_weights(weights, items=item_map)
    users = interactions.users
    space_users = np.array([users.index_of(f"space-fan-{u}") for u in range(USERS_PER_GROUP)])
    food_users = np.array([users.index_of(f"food-fan-{u}") for u in range(USERS_PER_GROUP)])
    held = item_map.to_internal([held_out[str(u)] for u in users.external_ids])
    return Blocks(
        interactions=interactions,
        items_df=items_df,
        space_items=item_map.to_internal([f"space-{i}" for i in range(ITEMS_PER_BLOCK)]),
        food_items=item_map.to_internal([f"food-{i}" for i in range(ITEMS_PER_BLOCK)]),
        cold_space=int(item_map.to_internal(["space-new"])[0]),
        cold_food=int(item_map.to_internal(["food-new"])[0]),
        space_users=space_users,
        food_users=food_users,
        held_out=held,
    )


def new_item_frame() -> pd.DataFrame:
    """Items that arrive after training: one clearly space, one with nothing known."""
    return pd.DataFrame(
        [
            {
                ITEM_ID: "space-arrival",
                "title": "Comet orbit special",
                "text": "An astronaut, a rocket and a nebula beyond the lunar base.",
                "tags": np.array(["Space", "scifi", "brand-new-tag"], dtype=object),
                "category": "science",
                "created_at": 1_800_000_000.0,
                "duration_seconds": 300.0,
            },
            {
                ITEM_ID: "unknown-arrival",
                "title": "Zzyzx qwerty",
                "text": None,
                "tags": None,
                "category": None,
                "created_at": 1_800_000_001.0,
                "duration_seconds": float("nan"),
            },
        ]
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


# Settings sized for the small block data: stronger ALS regularisation than the production
# default (0.05 is tuned for millions of interactions; here it lets ALS memorise each user's
# missing item), single threads so every run is reproducible.
MODEL_FACTORIES: dict[str, Callable[[], EmbeddingModel[Any]]] = {
    "als": lambda: ALSModel(
        ALSConfig(factors=8, regularization=1.0, iterations=10, use_gpu=False, num_threads=1)
    ),
    "bpr": lambda: ALSModel(
        ALSConfig(
            model="bpr",
            factors=8,
            iterations=300,
            learning_rate=0.1,
            use_gpu=False,
            num_threads=1,
        ),
        name="bpr",
    ),
    "hybrid": lambda: HybridModel(HybridConfig(no_components=8, epochs=30, num_threads=1)),
    "content": lambda: ContentModel(ContentConfig(dim=8)),
}

# Where implicit has a usable CUDA build, ALS and BPR also run the whole contract on the GPU
# (same settings; implicit's GPU kernels pick their own threads).
GPU_MODELS = ("als", "bpr")
if cuda_available():
    for _name in GPU_MODELS:
        MODEL_FACTORIES[f"{_name}-gpu"] = lambda _name=_name: ALSModel(  # type: ignore[misc]
            MODEL_FACTORIES[_name]().config.model_copy(update={"use_gpu": True}),
            name=f"{_name}-gpu",
        )

# Models whose refit is not bit-for-bit reproducible: implicit's GPU BPR runs its SGD
# updates in parallel without locks (seen on an H100: 144 of 162 item factors differed).
NOT_REPRODUCIBLE = {"bpr-gpu"}
