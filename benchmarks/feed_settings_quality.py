"""Feed quality under several serving settings, from one training: what the page step costs.

``recsys evaluate`` trains the feed for every run, and on ml-latest-small two trainings of
one code differ by 1-2 % in the feed's NDCG@10 (LightFM's parallel SGD, the ranker's tree
count). A setting that only shapes the page (MMR, the category caps, fatigue, the recent
likes' share) does not need its own training: this script imports a protocol's train part
(its validation split by default) into a throwaway store, runs the nightly job once, and
serves every test user a page of 10 through ``Recommender.feed`` under each setting, scored
as ``recsys evaluate`` scores its feed row (NDCG@10 and the diversity metrics of
``recsys.evaluation.beyond_accuracy``). The baseline is the same version served with the
page step turned off (no MMR, no category cap, no fatigue): the ranking alone.

    python benchmarks/feed_settings_quality.py --path ml-latest-small --protocol stratified
    python benchmarks/feed_settings_quality.py --dataset lastfm --path hetrec2011-lastfm-2k \
        --protocol stratified
    python benchmarks/feed_settings_quality.py --path ml-latest-small \
        --variants '{"mmr 0.98": {"mmr_lambda": 0.98}}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pipelines.datasets as datasets  # noqa: E402
from benchmarks._machine import describe_machine  # noqa: E402
from pipelines.evaluate import (  # noqa: E402
    RELEVANCE,
    make_protocol_split,
    matrix_for,
    prepare,
    protocol_settings,
    relevance_rule,
    throwaway_store,
    user_moments,
)
from pipelines.ingest import import_frames  # noqa: E402
from pipelines.train import train  # noqa: E402
from recsys.columns import ITEM_ID, USER_ID  # noqa: E402
from recsys.config import get_settings  # noqa: E402
from recsys.dataset import IdMap  # noqa: E402
from recsys.evaluation.metrics import evaluate_rankings  # noqa: E402
from recsys.evaluation.splits import validation_split  # noqa: E402
from recsys.serving import Recommender  # noqa: E402

FLAT = {"mmr_lambda": 1.0, "max_category_share": 1.0, "fatigue_penalty": 0.0}
PAGE_STEP = {
    "default": {},
    "no MMR": {"mmr_lambda": 1.0},
    "MMR 0.98": {"mmr_lambda": 0.98},
    "no category cap": {"max_category_share": 1.0},
    "category share 0.7": {"max_category_share": 0.7},
}
METRICS = ("ndcg@10", "category_ild@10", "ild_content@10", "coverage@10")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["movielens", "lastfm"], default="movielens")
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--protocol", choices=["temporal", "stratified"], default="temporal")
    parser.add_argument("--test", action="store_true", help="the test split, not validation")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", type=json.loads, default=PAGE_STEP, help="JSON object")
    args = parser.parse_args(argv)
    print(describe_machine())

    settings = protocol_settings(get_settings(), args.protocol)
    items, events = getattr(datasets, f"read_{args.dataset}")(args.path)
    data = prepare(args.path.name, items, events, settings)
    split = make_protocol_split(data, args.protocol, args.seed)
    if not args.test:
        split = validation_split(split)
    catalogue = data.items.drop_duplicates(ITEM_ID)
    train_data = matrix_for(split.train, IdMap(catalogue[ITEM_ID].astype(str)))
    users = sorted(set(split.test[USER_ID]) & set(train_data.users.external_ids))
    part = "test" if args.test else "validation"
    print(
        f"data: {args.path.name}, {args.protocol} {part} split: {len(split.train):,} train / "
        f"{len(split.test):,} test events, {len(users):,} users asked"
    )
    moments = user_moments(split)  # each user at their own moment, as `recsys evaluate`
    with tempfile.TemporaryDirectory(prefix="recsys-feed-settings-") as work:
        store, home = throwaway_store(settings, Path(work))
        import_frames(store, home, data.items, data.raw_events.iloc[split.train.index.to_numpy()])
        started = time.perf_counter()
        ranker = train(store, home, force=True).metrics.get("ranker", {})
        print(
            f"trained once in {time.perf_counter() - started:.0f} s; learned ranker "
            f"{ranker.get('status')} (out of fold {ranker.get('ndcg@10')} against the "
            f"blend's {ranker.get('blend_ndcg@10')})\n"
        )
        recommender = Recommender.open(store, home, record_impressions=False)
        content = recommender.require_state().catalogue
        scoring: dict[str, Any] = {
            "train": split.train,
            "relevance_column": RELEVANCE,
            "relevance_threshold": relevance_rule(args.protocol),
            "catalog": train_data.items.external_ids,
            "item_vectors": pd.DataFrame(
                np.asarray(content.content, np.float64), index=pd.Index(content.ids, dtype=str)
            ),
            "item_categories": catalogue.set_index(ITEM_ID)["category"],
            "cold_items": None,
        }
        print(f"{'feed settings':28s}" + "".join(f"{m:>18s}" for m in METRICS) + "   ndcg / flat")
        flat = None
        for name, update in {"page step off (baseline)": FLAT, **args.variants}.items():
            recommender.config = home.feed.model_copy(update=update)
            pages = {
                user: [i.item_id for i in recommender.feed(user, 10, as_of=moments.get(user)).items]
                for user in users
            }
            found = evaluate_rankings(pages, split.test, [10], **scoring)["metrics"]
            flat = found["ndcg@10"] if flat is None else flat
            row = "".join(f"{found[m]:18.4f}" for m in METRICS)
            print(f"{name:28s}{row}   {found['ndcg@10'] / flat:10.3f}x")
        recommender.close()
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
