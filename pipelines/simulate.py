"""Simulated users for tests and demos: they read their feeds over HTTP and react by the
demo world's planted tastes, sending each event back with the page's ``feed_id``.

A user looks at a page from the top and pays less attention further down; an item they
look at gets the world's reaction to an exposure (a long view and maybe a like when its
affinity is high; a skip, a bounce or a dislike when it is low). An item they do not look
at, or like too little to bother with, gets no event at all: an ignored impression, the
case a real feed sees most. The chance of looking rises with affinity, since people stop
at what catches their eye.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.demo_world import DemoWorld

# Attention at page position p (0 first) is ATTENTION_DECAY ** p ...
ATTENTION_DECAY = 0.9
# ... times how much the item catches the eye: a logistic in its affinity.
NOTICE_MIDPOINT = 0.4
NOTICE_SLOPE = 6.0


class ServiceError(RuntimeError):
    """The service answered with an error status."""


@dataclass
class FeedClient:
    """The two calls a simulated user makes, over plain HTTP (the standard library)."""

    base_url: str
    api_key: str | None = None
    timeout: float = 30.0

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def feed(self, user_id: str, limit: int) -> dict[str, Any]:
        quoted = urllib.parse.quote(user_id, safe="")
        return dict(self._request("GET", f"/v1/users/{quoted}/feed?limit={limit}"))

    def send_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/events", {"events": events}))


@dataclass
class SimulationResult:
    pages: int = 0
    impressions: int = 0
    events: int = 0
    likes: int = 0
    # Pages per variant (None: outside experiments).
    variants: dict[str | None, int] = field(default_factory=dict)


def simulate(
    client: FeedClient,
    world: DemoWorld,
    user_ids: Sequence[str],
    *,
    pages_per_user: int = 1,
    page_size: int = 10,
    seed: int = 0,
) -> SimulationResult:
    """Each user reads ``pages_per_user`` fresh feed pages and reacts to them; events go
    back after each page (so the next page already reflects them)."""
    rng = np.random.default_rng(seed)
    result = SimulationResult()
    for _ in range(pages_per_user):
        for user_id in user_ids:
            page = client.feed(user_id, page_size)
            result.pages += 1
            result.variants[page.get("variant")] = result.variants.get(page.get("variant"), 0) + 1
            items = [item["item_id"] for item in page["items"]]
            result.impressions += len(items)
            events = react_to_page(world, user_id, items, page.get("feed_id"), rng)
            if events:
                client.send_events(events)
                result.events += len(events)
                result.likes += sum(event["type"] == "like" for event in events)
    return result


def react_to_page(
    world: DemoWorld,
    user_id: str,
    item_ids: Sequence[str],
    feed_id: str | None,
    rng: np.random.Generator,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The events one user sends after reading one page, attributed to ``feed_id``."""
    if not item_ids:
        return []
    reactions = world.react([user_id] * len(item_ids), item_ids, rng)
    affinity = reactions["affinity"].to_numpy()
    known = np.isfinite(affinity)
    position = np.arange(len(item_ids))
    notice = 1.0 / (1.0 + np.exp(-NOTICE_SLOPE * (np.nan_to_num(affinity) - NOTICE_MIDPOINT)))
    looked = known & (rng.random(len(item_ids)) < ATTENTION_DECAY**position * notice)
    start = time.time() if now is None else now
    events: list[dict[str, Any]] = []
    for index in np.flatnonzero(looked).tolist():
        row = reactions.iloc[index]
        # Distinct, increasing times: an event's id is derived from its time.
        moment = start + 0.001 * len(events)
        base = {"user_id": user_id, "item_id": item_ids[index], "feed_id": feed_id}
        if row["viewed"]:
            events.append(
                {
                    **base,
                    "type": "view",
                    "dwell_seconds": float(row["dwell_seconds"]),
                    "timestamp": moment,
                }
            )
        else:
            events.append({**base, "type": "skip", "timestamp": moment})
        if row["liked"] or row["disliked"]:
            kind = "like" if row["liked"] else "dislike"
            events.append({**base, "type": kind, "timestamp": moment + 0.0005})
    return events
