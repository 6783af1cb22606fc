"""Do ignored impressions help training? One store, trained twice: without and with them.

1. A demo world is imported and trained: the service's first model.
2. Rounds of serving: every user reads a fresh page from the recommender (impressions
   recorded as in the service) and reacts by the world's planted tastes
   (``pipelines.simulate.react_to_page``); the events are stored with the page's
   ``feed_id``. Most shown items get no event at all: ignored impressions.
3. Training twice from that same store: ``train_on_ignored`` off, then on. Both are
   published (forced: the comparison is the point, not the gate).
4. Each version is scored against the same ground truth: per user, the items they have no
   event on that they like by the world's planted tastes (one draw of
   ``DemoWorld.react`` over the whole catalogue, fixed seed). The score is NDCG@10 of the
   page ``Recommender.feed`` serves. The training metrics add the learned ranker's
   out-of-fold NDCG@10 (same users and labels in both runs) and the gate's ALS NDCG@10.

The simulated users act at once, so the ignore window is set to a few seconds here; with
real users it is a day by default (``RECSYS_SIGNALS__IGNORED_WINDOW_HOURS``).

    python -m pipelines.impression_study                 # one world: scale 0.3, 3 rounds
    python -m pipelines.impression_study --seeds 5       # five worlds, paired differences
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.demo_world import DemoWorld, generate_world
from pipelines.ingest import import_frames
from pipelines.simulate import react_to_page
from pipelines.train import train
from recsys.columns import ITEM_ID, USER_ID
from recsys.config import Settings
from recsys.evaluation.metrics import evaluate_rankings
from recsys.events import validate_events
from recsys.serving import Recommender
from recsys.store import Store, open_store
from recsys.store.events import iter_events
from recsys.store.impressions import count_impressions

K = 10
WINDOW_SECONDS = 2.0


def serve_rounds(
    store: Store, settings: Settings, world: DemoWorld, rounds: int, page_size: int, seed: int
) -> dict[str, int]:
    """Every user reads ``rounds`` pages and reacts; returns what was shown and done."""
    rng = np.random.default_rng(seed)
    recommender = Recommender.open(store, settings, record_impressions=True)
    shown = acted = 0
    try:
        for _ in range(rounds):
            for user in world.users[USER_ID]:
                page = recommender.feed(user, limit=page_size)
                items = [item.item_id for item in page.items]
                shown += len(items)
                events = react_to_page(world, user, items, page.feed_id, rng)
                if not events:
                    continue
                acted += len({e[ITEM_ID] for e in events})
                checked = validate_events(pd.DataFrame(events), event_types=settings.event_types)
                assert not len(checked.rejects), checked.rejects
                recommender.ingest_events(checked.valid)
    finally:
        recommender.close()  # writes the impressions still queued
    return {"shown": shown, "acted_on": acted}


def ground_truth(store: Store, world: DemoWorld, seed: int) -> pd.DataFrame:
    """Per user, the catalogue items without an event of theirs that they like by the
    world's planted tastes (one fixed draw): the test set both versions are scored on."""
    with store.read() as conn:
        touched = pd.concat(list(iter_events(conn, columns=(USER_ID, ITEM_ID))))
    return world.hidden_likes(touched, seed).assign(weight=1.0)


def feed_ndcg(store: Store, settings: Settings, truth: pd.DataFrame, users: list[str]) -> float:
    """NDCG@10 of the served pages (nothing recorded: an evaluation is not a user)."""
    recommender = Recommender.open(store, settings, record_impressions=False)
    try:
        recs = {u: [i.item_id for i in recommender.feed(u, limit=K).items] for u in users}
    finally:
        recommender.close()
    report = evaluate_rankings(recs, truth, [K], remove_seen=False)
    return float(report["metrics"][f"ndcg@{K}"])


def run_study(
    home: Path, *, seed: int, scale: float, rounds: int, page_size: int
) -> dict[str, Any]:
    base = Settings(home=home, _env_file=None)  # type: ignore[call-arg]
    settings = base.model_copy(
        update={
            "signals": base.signals.model_copy(
                update={"ignored_window_hours": WINDOW_SECONDS / 3600.0}
            )
        }
    )
    store = open_store(settings)
    try:
        world = generate_world(seed=seed, scale=scale)
        import_frames(store, settings, world.items, world.events())
        train(store, settings)
        served = serve_rounds(store, settings, world, rounds, page_size, seed)
        time.sleep(WINDOW_SECONDS * 1.5)  # every page now older than the ignore window
        with store.read() as conn:
            impressions = count_impressions(conn)
        truth = ground_truth(store, world, seed)
        users = sorted(truth[USER_ID].unique().tolist())
        out: dict[str, Any] = {
            "world": {"seed": seed, "scale": scale, "users": world.n_users, "items": world.n_items},
            "rounds": rounds,
            "page_size": page_size,
            "impressions": impressions,
            **served,
            "test_users": len(users),
            "test_likes": len(truth),
        }
        for label, on in (("without", False), ("with", True)):
            arm = settings.model_copy(
                update={
                    "impressions": settings.impressions.model_copy(update={"train_on_ignored": on})
                }
            )
            result = train(store, arm, force=True)
            ranker = result.metrics.get("ranker", {})
            gate = result.metrics.get("gate", {})
            out[label] = {
                "ignored_impressions": result.data_stats["ignored_impressions"],
                "feed_ndcg@10": round(feed_ndcg(store, arm, truth, users), 4),
                "ranker_ndcg@10": ranker.get("ndcg@10"),
                "ranker_blend_ndcg@10": ranker.get("blend_ndcg@10"),
                "ranker_status": ranker.get("status"),
                "gate_als_ndcg@10": gate.get("als", {}).get("ndcg@10"),
            }
        return out
    finally:
        store.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11, help="the first world's seed")
    parser.add_argument("--seeds", type=int, default=1, help="worlds, seeds counted up (1)")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=10)
    args = parser.parse_args(argv)
    studies = []
    for seed in range(args.seed, args.seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="impression-study-") as tmp:
            started = time.perf_counter()
            out = run_study(
                Path(tmp) / "home",
                seed=seed,
                scale=args.scale,
                rounds=args.rounds,
                page_size=args.page_size,
            )
        out["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(out), flush=True)
        studies.append(out)
    print(
        f"\n{'seed':>5} {'shown':>7} {'ignored':>8} {'feed without':>13} {'feed with':>10} "
        f"{'ranker without':>15} {'ranker with':>12} {'blend with':>11}"
    )
    for out in studies:
        without, with_ = out["without"], out["with"]
        print(
            f"{out['world']['seed']:>5} {out['shown']:>7} {with_['ignored_impressions']:>8} "
            f"{without['feed_ndcg@10']:>13.4f} {with_['feed_ndcg@10']:>10.4f} "
            f"{_fmt(without['ranker_ndcg@10']):>15} {_fmt(with_['ranker_ndcg@10']):>12} "
            f"{_fmt(with_['ranker_blend_ndcg@10']):>11}"
        )
    for key, label in (("feed_ndcg@10", "feed"), ("ranker_ndcg@10", "ranker")):
        diffs = [
            o["with"][key] - o["without"][key]
            for o in studies
            if o["with"][key] is not None and o["without"][key] is not None
        ]
        if diffs:
            print(
                f"{label} NDCG@{K}, with minus without: median {np.median(diffs):+.4f}, "
                f"mean {np.mean(diffs):+.4f}, higher in {sum(d > 0 for d in diffs)} of {len(diffs)}"
            )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
