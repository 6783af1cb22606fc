"""A new user's first pages: feed quality after their first 1, 2, 3, 5 and 10 events.

The protocols of ``recsys evaluate`` ask users with a history (every MovieLens user has 20
ratings or more). This script asks users the models have never seen: a share of the users
(``--new-share``, drawn with ``--seed``) is left out of training; the nightly job runs once
on everyone else; then each new user's events arrive through the service's write path in
their order (time; Last.fm has none, so a random order), and after their first k events the
user is served a page of 10 through ``Recommender.feed`` under each feed setting given,
scored against their remaining events (MovieLens: ratings of 4 and up; Last.fm: every
artist played) with the items already touched left out. The baseline is the popular items
(the page a user without events gets).

    python benchmarks/new_user_quality.py --path ml-latest-small
    python benchmarks/new_user_quality.py --dataset lastfm --path hetrec2011-lastfm-2k
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
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
    prepare,
    throwaway_store,
)
from pipelines.ingest import import_frames  # noqa: E402
from pipelines.train import train  # noqa: E402
from recsys.columns import ITEM_ID, TIMESTAMP, USER_ID  # noqa: E402
from recsys.config import get_settings  # noqa: E402
from recsys.evaluation.metrics import evaluate_rankings  # noqa: E402
from recsys.events import validate_events  # noqa: E402
from recsys.serving import Recommender  # noqa: E402

STEPS = (1, 2, 3, 5, 10)
VARIANTS: dict[str, dict[str, Any]] = {"default": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["movielens", "lastfm"], default="movielens")
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--new-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--validation", action="store_true", help="only the train part of a protocol split"
    )
    parser.add_argument("--variants", type=json.loads, default=VARIANTS, help="JSON object")
    args = parser.parse_args(argv)
    print(describe_machine())

    settings = get_settings()
    items, events = getattr(datasets, f"read_{args.dataset}")(args.path)
    data = prepare(args.path.name, items, events, settings)
    if args.validation:
        # Only the train part of the dataset's protocol split (MovieLens: each user's oldest
        # 80 %; Last.fm, without time: a random 75 %); its test part is never read.
        protocol = "temporal" if args.dataset == "movielens" else "stratified"
        kept = make_protocol_split(data, protocol, args.seed).train.index.to_numpy()
        data = replace(
            data,
            events=data.events.iloc[kept].reset_index(drop=True),
            raw_events=data.raw_events.iloc[kept].reset_index(drop=True),
        )
    rng = np.random.default_rng(args.seed)
    users = np.sort(data.events[USER_ID].unique())
    new_users = set(rng.choice(users, int(len(users) * args.new_share), replace=False).tolist())
    is_new = data.events[USER_ID].isin(new_users).to_numpy()
    # Each new user's events in the order they would arrive (ties, and data without time,
    # in a random order).
    arrival = data.events[is_new].assign(_tie=rng.random(int(is_new.sum())))
    arrival = arrival.sort_values([USER_ID, TIMESTAMP, "_tie"], kind="stable")
    arrival["_n"] = arrival.groupby(USER_ID).cumcount()
    print(
        f"data: {args.path.name}{' (train part)' if args.validation else ''}, "
        f"{len(users):,} users of whom {len(new_users):,} are new "
        f"(left out of training); {int((~is_new).sum()):,} training events"
    )
    with tempfile.TemporaryDirectory(prefix="recsys-new-users-") as work:
        store, home = throwaway_store(settings, Path(work))
        import_frames(store, home, data.items, data.raw_events.iloc[np.flatnonzero(~is_new)])
        started = time.perf_counter()
        train(store, home, force=True)
        print(f"trained once in {time.perf_counter() - started:.0f} s\n")
        recommender = Recommender.open(store, home, record_impressions=False)
        catalog = pd.Index(data.items[ITEM_ID].astype(str))
        names = ["popular (no events)", *args.variants]
        print(f"{'after events':>12s}  {'users':>6s}" + "".join(f"{n[:22]:>24s}" for n in names))
        arrived = 0
        for step in STEPS:
            batch = arrival[(arrival["_n"] >= arrived) & (arrival["_n"] < step)]
            raw = data.raw_events.iloc[batch.index.to_numpy()]
            recommender.ingest_events(validate_events(raw, event_types=home.event_types).valid)
            arrived = step
            known = arrival[arrival["_n"] < step]
            rest = arrival[arrival["_n"] >= step]
            asked = sorted(set(rest.loc[rest[RELEVANCE] > 0, USER_ID]))
            scores = []
            for name in names:
                recommender.config = home.feed.model_copy(update=args.variants.get(name, {}))
                pages = {u: _page(recommender, u, name == names[0]) for u in asked}
                found = evaluate_rankings(
                    pages,
                    rest,
                    [10],
                    train=known,
                    relevance_column=RELEVANCE,
                    relevance_threshold=0.5,
                    catalog=catalog,
                )
                scores.append(found["metrics"]["ndcg@10"])
            print(f"{step:>12d}  {len(asked):>6d}" + "".join(f"{s:>24.4f}" for s in scores))
        recommender.close()
        store.dispose()
    return 0


def _page(recommender: Recommender, user: str, popular: bool) -> list[str]:
    if popular:
        page = recommender.degraded_feed(user, 10, set(), 0, None)
        return [item.item_id for item in page.items]
    return [item.item_id for item in recommender.feed(user, 10).items]


if __name__ == "__main__":
    raise SystemExit(main())
