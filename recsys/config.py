"""The one settings object. Every knob is read from the environment (prefix ``RECSYS_``)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recsys.columns import MAX_EVENT_TYPE_LENGTH
from recsys.models.configs import ALSConfig, ContentConfig, HybridConfig, ItemToItemConfig

BUILTIN_EVENT_TYPES = ("like", "dislike", "skip", "view", "rating", "play")


class SignalWeights(BaseModel):
    """How raw events turn into interaction confidence (see ``recsys.signals``).

    Each default carries its reason, so a team can argue with it rather than guess.
    """

    # An explicit like is the clearest positive a feed gets.
    like: float = 4.0
    # An explicit dislike is as informative as a like, in the other direction.
    dislike: float = -4.0
    # A skip is weaker than a dislike: the user may simply not be in the mood.
    skip: float = -1.0
    # A fully watched item is worth about half a like; a partial view scales linearly.
    view_full: float = 2.0
    # Below this fraction of the item's length a view is a bounce, counted as a weak negative.
    view_bounce_fraction: float = 0.1
    view_bounce: float = -0.5
    # Ratings: >= positive_at is positive, <= negative_at negative, in between weakly positive
    # (a middling rating still says the user chose to watch it).
    rating_positive_at: float = 4.0
    rating_negative_at: float = 2.0
    rating_scale: float = 1.0
    rating_negative: float = -1.0
    rating_neutral: float = 0.25
    # Plays: log1p of the count, so the 500th play does not outweigh everything else.
    play_scale: float = 1.0
    # An item shown in a feed that the user did not act on (no event of theirs on it) within
    # ``ignored_window_hours``: a weak negative, a quarter of a skip. Scrolling past says
    # less than skipping (the user may not have looked), but a page ignored again and again
    # is a taste; a dozen ignored impressions still do not outweigh one like. ALS reads a
    # weight w as confidence alpha * |w| that the user does not want the item, where an
    # item never shown has 1: at the default alpha (8) this is 2, and -0.125 would have
    # been exactly an unseen item's, that is, no signal at all.
    impression_ignored: float = -0.25
    ignored_window_hours: float = Field(default=24.0, gt=0.0)
    # Events older than this lose half their weight; 0 disables decay.
    half_life_days: float = 0.0
    # Repeated events on one (user, item) pair are summed, then clipped to this magnitude.
    max_abs_weight: float = 10.0


class ImpressionConfig(BaseModel):
    """What the service records of what it showed (see ``recsys.serving.impressions``)."""

    # Every feed and similar-items answer gets a feed_id and its items are stored.
    enabled: bool = True
    # Rows waiting for the store at most (about 150 bytes each). Past that, new rows are
    # dropped and counted in /metrics rather than holding a request or growing memory.
    queue_rows: int = Field(default=200_000, ge=1)
    # The longest a shown item waits before it is written (and on shutdown, everything).
    flush_seconds: float = Field(default=1.0, gt=0.0, le=60.0)
    # The nightly job deletes impressions older than this; 0 keeps them forever.
    retention_days: float = Field(default=90.0, ge=0.0)
    # Training turns ignored impressions into weak negatives (``SignalWeights``).
    train_on_ignored: bool = True


class FeedConfig(BaseModel):
    """How the recommender blends its candidate sources (see ``recsys.feed``)."""

    # Candidates fetched per source before blending; more means better recall, slower pages.
    # On ml-latest-small 50 scored the same as 100 (feed NDCG@10 temporal 0.1250 vs 0.1258,
    # stratified 0.3538 vs 0.3525; LightFM's run-to-run noise alone moves them by 0.003),
    # and a page at 100k items costs about a sixth less.
    candidates_per_source: int = Field(default=50, ge=1, le=1000)
    # Source weights for a user with a full history ("warm") and with none ("cold"); a user
    # in between is interpolated by history length, so new users lean on popularity and
    # warm users on behaviour.
    #
    # The warm weights were chosen on a validation split carved from the training part of
    # MovieLens (ml-latest-small, each user's newest 20 % of training events, NDCG@10 of the
    # feed's lists), never on a test split. Behavioural scores alone gave 0.137 there; the
    # old hybrid 0.5 / content 0.35 diluted them to 0.121, while hybrid 0.25, content 0.15
    # and popular 0.05 on top of behaviour and its recent-likes list give 0.146. The hybrid
    # and content sources still carry new items (see cold_item_boost) and cold users.
    warm_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "behavioural": 1.0,
            "hybrid": 0.25,
            "content": 0.15,
            "fresh": 0.15,
            "popular": 0.05,
        }
    )
    # The cold weights were chosen for users the models have never seen, after their first
    # one or two events (`benchmarks/new_user_quality.py --validation`: the train part of
    # ml-latest-small's temporal split and of Last.fm's stratified one; from three likes on
    # the learned ranker serves them). NDCG@10 after one and two events: content-led
    # (behavioural 0, content 0.6, popular 0.6) 0.151 / 0.169 on MovieLens and 0.104 /
    # 0.149 on Last.fm, below the popular items alone (0.295 / 0.293, 0.202 / 0.199);
    # behavioural 0.5 and popular 1.0 0.314 / 0.314 and 0.250 / 0.298. One or two items say
    # little about a taste: what most people like, nudged by what the user's items are
    # close to in behaviour, beats the likeness of their text. Content at 0.4 rather than
    # 0.1 costs under 1 % there (0.312 / 0.312, 0.250 / 0.293) and keeps an item just like
    # the one the user liked (a new one above all) within reach of their first pages. Fresh
    # keeps its weight (items created since the last training, so a new user sees some):
    # nothing in those data sets is new after training, so the study cannot weigh it.
    cold_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "behavioural": 0.5,
            "hybrid": 0.3,
            "content": 0.4,
            "fresh": 0.3,
            "popular": 1.0,
        }
    )
    # Items close (in ALS space) to the user's five latest likes join the behavioural source
    # with this share of its weight. On the validation split above it added about 5 %
    # (0.137 -> 0.145 with behaviour alone: the last few likes say more about the next pick
    # than the whole history does); 0.25 to 0.5 scored alike, 1.0 was worse.
    recent_weight: float = Field(default=0.5, ge=0.0)
    # Number of events after which a user counts as fully warm.
    warm_after_events: int = 20
    # Items with fewer positive users than this are "cold": content and hybrid scores are
    # boosted for them because behaviour cannot vouch for them yet.
    cold_item_interactions: int = 5
    cold_item_boost: float = 0.5
    # Places per page (at most one per five items) kept for items nobody had liked when
    # the version was trained, filled from the fresh source's own list of them (see
    # FreshSource.new_items) in place of the page's last picks. Off by default: on the
    # validation splits of ml-latest-small, two places on pages of 10 lifted the cold-item
    # protocol's NDCG@10 from 0 to 0.0126 (content alone 0.0114; one place 0.0080) and cost
    # 8.0 % on the temporal one (0.1453 -> 0.1337; one place 5.7 %) and 8.9 % on the
    # stratified one (0.2208 -> 0.2012). Turn it on where new items must be seen to be
    # judged.
    new_item_slots: int = Field(default=0, ge=0)
    # The model whose stored user vector picks those new items (content's likeness to the
    # user's likes where a version or a user lacks it): on the cold-item protocol's
    # validation split of ml-latest-small, ranking the held-out items alone, the hybrid's
    # NDCG@10 is 0.128 against content's 0.062 (see FreshSource.new_items).
    new_item_model: str = "hybrid"
    # A view shorter than this does not mark an item as consumed (the user bounced).
    seen_view_seconds: float = 5.0
    # MMR trade-off between relevance (1.0) and novelty against the page so far (0.0).
    # 0.95 on the validation split above: 0.75 cost 2 % of NDCG@10 (0.142 against 0.145)
    # for little variety that the category cap does not already give; 0.95 costs nothing.
    mmr_lambda: float = 0.95
    # No category may fill more than this share of a page, or than its share of the user's
    # latest likes if that is more (recsys.serving.page.category_caps).
    max_category_share: float = 0.5
    # False: the flat cap above for every category, whatever the user likes (an experiment
    # variant can compare the two; the flat cap cost 15 % of NDCG@10 on the planted world).
    calibrate_category_caps: bool = True
    # Feedback fatigue: candidates similar to recent skips lose up to this much score,
    # fading with the skip's age.
    fatigue_penalty: float = 0.5
    fatigue_half_life_hours: float = 24.0
    # Recent events read per request for the real-time user vector and the consumed-items
    # filter. At 500 a heavy user (ml-latest-small has users with over 2,000 ratings) was
    # shown items they had rated long ago, and their ALS vector forgot most of their history:
    # 500 -> 5000 raised the feed's validation NDCG@10 from 0.114 to 0.121 (behaviour alone
    # 0.132 -> 0.137). 3000 covers every user there and stays a few milliseconds per request.
    history_events: int = 3000
    # BLAS threads in a process that serves feeds (0 leaves the library default). A page's
    # matrix products are a few hundred rows: a second BLAS thread never speeds them up, and
    # its spin-waiting after every product cost a whole core (CPU per page 39.7 ms against
    # 21.0 ms at one thread, the same wall time, 5k users x 10k items on 2 cores).
    blas_threads: int = Field(default=1, ge=0)
    # Which ranker orders the candidates: "auto" is the version's learned ranker when it
    # passed its gate (``recsys models list`` says), else the hand blend above; "blend"
    # always the blend. On ml-latest-small the ranker scored NDCG@10 0.141 against the
    # blend's 0.125 (temporal) and 0.378 against 0.354 (stratified, labels held back at
    # random as that protocol asks).
    ranker: Literal["auto", "blend"] = "auto"
    # Users with fewer likes than this get the blend even when a learned ranker serves: it
    # learned from users with a history. Chosen with `benchmarks/new_user_quality.py
    # --validation` (see cold_weights): after a new user's third event NDCG@10 0.292 with 3,
    # 0.319 with 5 on MovieLens, 0.303 and 0.327 on Last.fm; after the fifth, 0.276 and
    # 0.313 on MovieLens. The validation splits of `recsys evaluate` have no user with 3 or
    # 4 likes (the same feed there); 10 cost 1 % on the temporal one.
    ranker_min_likes: int = Field(default=5, ge=0)


class RankerConfig(BaseModel):
    """The learned ranker trained by ``recsys train`` (see ``recsys.rank_training``)."""

    enabled: bool = True
    # Users whose held-back events label the training lists (sampled when there are more).
    # The feature pass costs about a served page per user.
    max_users: int = Field(default=3000, ge=10)
    # Too few users to learn from: the blend serves.
    min_users: int = Field(default=50, ge=2)
    # Holdouts (label windows) the ranker learns from while fewer than max_users users
    # have labels, each with its own first-stage fits, so the stage's cost grows with them.
    # Held back at random (data without time, or RECSYS_GATE_HOLDOUT=random), each further
    # one is another random share of every user's events. On a validation split of
    # ml-latest-small (stratified, about 560 labelled users) one holdout left the ranker's
    # out-of-fold gain over the blend at +0.3 to +2.5 % in 7 runs, and the 2 % gate refused
    # it in 5; two gave +6.4 % in both runs, and the feed 1.04x ALS where the refused one's
    # blend gave 0.995x. Held back as each user's newest events, each further one is the
    # newest events of what every user had before the window after it (its fits and
    # labels never see the later one). Temporal validation split, three runs a side: feed
    # NDCG@10 0.1387, 0.1414, 0.1397 with one window, 0.1417, 0.1448, 0.1428 with two.
    label_windows: int = Field(default=2, ge=1, le=5)
    # Candidates that did not turn out relevant kept per user (sampled).
    negatives_per_user: int = Field(default=40, ge=1)
    # Take the negatives first from what the user turned down in the label period (a
    # skip, a dislike, a bounced view), as from ignored impressions, before random ones.
    # Chosen on ml-latest-small's validation splits (feed NDCG@10, 3-5 runs a side on
    # temporal: 0.1336-0.1411 -> 0.1443-0.1465; stratified 0.2219-0.2249 -> 0.2219-0.2266);
    # the temporal test split did not follow (median of four or five runs 0.1369 -> 0.1351).
    rejected_negatives: bool = True
    # The ranker serves only when its out-of-fold NDCG@10 (cross-validation over users)
    # beats the blend's by this fraction (a negative margin publishes one that is worse:
    # for experiments).
    margin: float = Field(default=0.02, ge=-1.0)
    # Trees are chosen by cross-validation over users, up to this many.
    max_trees: int = Field(default=300, ge=1)
    folds: int = Field(default=5, ge=2)
    # Small, slow, shrunk trees: on a validation split carved from ml-latest-small (about
    # 400 users with labels), 15 leaves at a rate of 0.05 fell below the blend (0.126 to
    # 0.137 against 0.139 at 50 to 400 trees) while 7 leaves at 0.02 with an L2 penalty of
    # 10 beat it (0.141 to 0.143).
    learning_rate: float = Field(default=0.02, gt=0.0)
    num_leaves: int = Field(default=7, ge=2)
    min_data_in_leaf: int = Field(default=50, ge=1)
    lambda_l2: float = Field(default=10.0, ge=0.0)
    seed: int = 0


class Settings(BaseSettings):
    """Configuration for the library, the pipelines and the service."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    home: Path = Field(default=Path("./var"), description="Where embedded state lives.")
    # Where `recsys evaluate` writes its reports and the web console reads them.
    reports_dir: Path = Field(default=Path("reports"), description="Evaluation reports.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite under home."
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL; default is embedded Qdrant Edge."
    )
    qdrant_api_key: str | None = None
    # Seconds a call to the Qdrant server may take before it fails (the feed then serves
    # popularity from the store, marked degraded).
    qdrant_timeout: int = Field(default=10, gt=0)
    # Shards and replicas of each new version's collections on a Qdrant cluster.
    qdrant_shards: int = Field(default=1, gt=0)
    qdrant_replicas: int = Field(default=1, gt=0)
    # Model artifacts (factors, encoders): every service and the trainer must see the same
    # directory, so on several machines it is shared storage. Default: <home>/models.
    models_dir: Path | None = None
    # Extra event types and the weight each one contributes, e.g. {"share": 3, "purchase": 6}.
    custom_event_types: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    signals: SignalWeights = Field(default_factory=SignalWeights)
    als: ALSConfig = Field(default_factory=ALSConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    content: ContentConfig = Field(default_factory=ContentConfig)
    item2item: ItemToItemConfig = Field(default_factory=ItemToItemConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    feed: FeedConfig = Field(default_factory=FeedConfig)
    impressions: ImpressionConfig = Field(default_factory=ImpressionConfig)
    # "key:scope,key:scope" where scope is read or write (write implies read).
    api_keys: str = ""
    keep_versions: int = 3
    # A retired item leaves every feed and similar-items list and is not published again,
    # but its events still tell the models what its users like. False drops those events
    # from training too (say, when the item was withdrawn as harmful or mislabelled).
    train_on_retired_items: bool = True
    import_chunk_rows: int = 100_000
    max_body_bytes: int = 4 * 1024 * 1024
    # Requests the service works on at once; the rest wait their turn in the event loop.
    # Feeds are CPU-bound Python that holds the GIL, so more threads only trade it back and
    # forth. 32 concurrent clients, 100k items, 2 cores: 40 threads (the default of the
    # framework) 45 feeds/s at 26 ms of server CPU per feed; 4 threads 63/s at 18 ms;
    # 2 threads 80/s at 14 ms, the same CPU as one request at a time.
    request_threads: int = Field(default=2, ge=1, le=256)
    # uvicorn's line per request. Off by default: /metrics counts every request by route
    # and status, and the log line costs CPU on the hot path.
    access_log: bool = False
    # Serving processes behind one port (`recsys serve`); 0 means one per core.
    serve_workers: int = Field(default=0, ge=0, le=256)
    # Each process opens a private copy of an embedded (Qdrant Edge) version instead of the
    # published directory, which a shard allows one process to open. `recsys serve` turns
    # it on when it runs more than one worker.
    edge_replicas: bool = False
    # Quality gate: a new model may not be worse than the live one by more than this fraction.
    # 10% because the gate's own noise on a few thousand users is around 5%.
    gate_margin: float = 0.10
    # Share of each user's events held out to evaluate a run before it may publish; the
    # same events label the learned ranker's training lists. 0.2 is the horizon the feed is
    # judged on (each user's next fifth); at 0.1 the ranker learned a shorter one, and on a
    # validation split carved from ml-latest-small it fell below the blend (0.133 against
    # 0.136) where at 0.2 it matched it (0.138 against 0.139) before the later fixes.
    gate_holdout_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    # Which of a user's events are held out: "newest" asks what a feed is asked (the next
    # items after a user's past); "random" asks for any of them, as a random-split
    # evaluation does. Events that all share one timestamp (no time was logged) have no
    # newest, and are held out at random either way.
    gate_holdout: Literal["newest", "random"] = "newest"

    @field_validator("custom_event_types", mode="before")
    @classmethod
    def _parse_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return {}
            if value.startswith("{"):
                return json.loads(value)
            # "share:3,save:2" is easier to type in a shell than JSON.
            parsed: dict[str, float] = {}
            for part in value.split(","):
                name, _, weight = part.partition(":")
                parsed[name.strip()] = float(weight) if weight else 1.0
            return parsed
        return value

    @field_validator("custom_event_types")
    @classmethod
    def _no_builtin_override(cls, value: dict[str, float]) -> dict[str, float]:
        # Incoming types are matched stripped and lower-cased, and stored in a 64-character
        # column: a name that cannot match, or cannot be stored, is a configuration error.
        normalised: dict[str, float] = {}
        for name, weight in value.items():
            key = name.strip().lower()
            if not key:
                raise ValueError("custom event type names may not be empty")
            if len(key) > MAX_EVENT_TYPE_LENGTH:
                raise ValueError(
                    f"custom event type {key[:20]!r}... is longer than "
                    f"{MAX_EVENT_TYPE_LENGTH} characters"
                )
            if key in normalised:
                raise ValueError(f"custom event type {key!r} is given twice")
            normalised[key] = weight
        clash = set(normalised) & set(BUILTIN_EVENT_TYPES)
        if clash:
            raise ValueError(f"custom event types may not redefine built-ins: {sorted(clash)}")
        return normalised

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(BUILTIN_EVENT_TYPES) | frozenset(self.custom_event_types)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Users paste plain postgres URLs; psycopg 3 is the driver we ship.
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.home / 'recsys.db').resolve()}"

    @property
    def vectors_dir(self) -> Path:
        return self.home / "vectors"

    @property
    def artifacts_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.home / "models"

    @field_validator("api_keys")
    @classmethod
    def _api_keys_parse(cls, value: str) -> str:
        # A bad scope is a configuration error, reported when the settings load.
        _parse_api_keys(value)
        return value

    def parsed_api_keys(self) -> dict[str, str]:
        """Map each configured key to its scope."""
        return _parse_api_keys(self.api_keys)


def _parse_api_keys(text: str) -> dict[str, str]:
    """``key:read,key:write`` as {key: scope}; a key given without a scope reads only."""
    keys: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, _, scope = part.rpartition(":")
        if not key:
            key, scope = scope, "read"
        if scope not in ("read", "write"):
            raise ValueError(f"API key scope must be read or write, got {scope!r}")
        keys[key] = scope
    return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
