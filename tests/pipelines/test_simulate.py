"""The simulated users react by the world's planted tastes and send the feed_id back."""

from __future__ import annotations

import numpy as np

from pipelines.demo_world import generate_world
from pipelines.simulate import react_to_page


def test_users_act_on_what_they_like_and_attribute_it() -> None:
    world = generate_world(seed=3, scale=0.2)
    user = world.users.iloc[0]
    favourite = user["top_topic"]
    items = world.items
    liked_topic = items[items["category"] == favourite]["item_id"].head(10).tolist()
    other_topic = items[~items["category"].isin(user["topics"])]["item_id"].head(10).tolist()
    rng = np.random.default_rng(0)
    on_taste = off_taste = 0
    for _ in range(30):
        for page, is_taste in ((liked_topic, True), (other_topic, False)):
            events = react_to_page(world, user["user_id"], page, "feed-1", rng, now=1.8e9)
            assert all(e["feed_id"] == "feed-1" and e["item_id"] in page for e in events)
            assert {e["type"] for e in events} <= {"view", "skip", "like", "dislike"}
            assert all(e["dwell_seconds"] >= 0 for e in events if e["type"] == "view")
            positive = sum(e["type"] == "like" for e in events)
            on_taste += positive if is_taste else 0
            off_taste += 0 if is_taste else positive
    assert on_taste > 3 * max(off_taste, 1)
    # Strangers and unknown items get no reaction at all.
    assert react_to_page(world, "stranger", liked_topic, "f", rng) == []
    assert react_to_page(world, user["user_id"], ["no-such-item"], "f", rng) == []
