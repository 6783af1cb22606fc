"""A synthetic but believable feed: topical items, users with tastes, and their events.

``generate_world(seed, scale)`` builds the catalogue and the user population at once and
streams the events on demand (``DemoWorld.iter_events``), so memory stays flat at any scale.

Sizes (``scale`` > 0; each can be overridden with ``n_users``/``n_items``/``n_events``):

* users  = round(1,000 * scale)                     (at least 1)
* events = round(100,000 * scale)                   (exactly; at least one per user)
* items  = round(2,000 * sqrt(scale)), clipped to [120, 50,000]

so ``scale=1`` is 1,000 users, 2,000 items, 100,000 events and ``scale=100`` is 100,000 users,
20,000 items, 10,000,000 events.

The world:

* Twelve topics (cooking, football, jazz, ...), each with its own vocabulary. An item belongs
  to one topic (``category``); its title and text are built from the topic's words; it has
  2-4 tags of its topic and, for about one item in ten, one tag of a second topic that also
  counts a little towards its appeal. Items are clips, videos, articles or podcast episodes,
  each kind with its own lognormal length. Popularity is Zipf-like within a topic.
* Time runs over the 120 days before ``WORLD_END`` (a fixed instant, so worlds do not depend
  on the clock). Catalogue items appear over the window, more of them early; about 5% are
  new, created in the last two and a half days, after nearly all events, with low
  popularity, so they have no or few interactions (the cold-start case).
* A user likes one to three topics (a sparse mixture) and sometimes explores others.
  Activity is lognormal: a few heavy users and many light ones. Each time a user is shown an
  item, an affinity in (0, 1) follows from the user's taste for the item's topic, the item's
  quality and noise. A high affinity gives a view of nearly the whole item, often followed by
  a like; a low one gives a skip or a short bouncing view, and now and then a dislike.
  ``view`` rows always carry ``dwell_seconds`` (>= 0, at most the item's length); other
  rows have NaN dwell. ``value`` is NaN (the demo has no ratings or plays).
* ``event_id`` is None: the ingester derives a deterministic id from (user, item, type,
  timestamp); timestamps are in milliseconds and (user, item, type, timestamp) does not
  repeat in practice.

Ids: ``demo-user-0001`` ... and ``demo-item-00001`` ..., numbered from 1 and zero-padded to
four and five digits; numbers beyond that width are written in full (``demo-user-12345``),
so ``demo-user-0001`` is the first user of every world.

Events come grouped by user (users in id order, each user's events in time order), not
sorted by time globally. They are generated per block of ``BLOCK_USERS`` users from a
random stream seeded by (seed, block), so chunking never changes the rows and the same seed
and sizes give identical frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from pipelines.datasets import events_frame, items_frame
from recsys.columns import ITEM_ID, USER_ID

__all__ = [
    "BLOCK_USERS",
    "EVENT_TYPES",
    "TOPICS",
    "WINDOW_DAYS",
    "WORLD_END",
    "DemoWorld",
    "generate_world",
    "item_id",
    "user_id",
]

WORLD_END = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
WINDOW_DAYS = 120.0
DAY = 86_400.0
BLOCK_USERS = 2_000

USERS_PER_SCALE = 1_000
EVENTS_PER_SCALE = 100_000
ITEMS_PER_SQRT_SCALE = 2_000
MIN_ITEMS = 120
MAX_ITEMS = 50_000

EVENT_TYPES = ("view", "skip", "like", "dislike")
_VIEW, _SKIP, _LIKE, _DISLIKE = range(4)

# Random streams: each gets its own seed sequence, so adding draws to one never shifts another.
_ITEMS_STREAM, _USERS_STREAM, _ACTIVITY_STREAM, _EVENTS_STREAM = range(4)


@dataclass(frozen=True)
class _Topic:
    name: str
    weight: float  # relative popularity among users
    tags: tuple[str, ...]
    nouns: tuple[str, ...]  # plural noun phrases: "pasta sauces"
    subjects: tuple[str, ...]  # singular or mass nouns: "sourdough"
    howto: tuple[str, ...]  # verb phrases: "make fresh pasta"
    adjectives: tuple[str, ...]
    words: tuple[str, ...]  # more vocabulary for descriptions


def _t(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


TOPICS: tuple[_Topic, ...] = (
    _Topic(
        "cooking",
        1.3,
        _t(
            "recipes, pasta, baking, vegetarian, weeknight dinners, knife skills, spices, "
            "street food, desserts, meal prep"
        ),
        _t(
            "pasta sauces, weeknight dinners, bread recipes, knife skills, spice blends, "
            "soups, one-pot meals, salad dressings, cast iron tricks, dumplings"
        ),
        _t(
            "sourdough, risotto, the perfect omelette, fresh pasta, curry, ramen broth, "
            "caramel, a Sunday roast, fermentation, tomato sauce"
        ),
        _t(
            "make fresh pasta, sharpen a chef's knife, bake sourdough at home, cook rice "
            "perfectly, build a spice cabinet, plan a week of meals, fry an egg properly, "
            "make stock from scraps"
        ),
        _t("quick, easy, classic, cheap, comforting, foolproof"),
        _t(
            "garlic, olive oil, oven, skillet, herbs, butter, lemon, simmer, roast, dough, "
            "flavour, kitchen, chef, recipe, ingredients"
        ),
    ),
    _Topic(
        "football",
        1.4,
        _t(
            "premier league, champions league, tactics, transfers, goalkeepers, world cup, "
            "match analysis, strikers, youth academy, highlights"
        ),
        _t(
            "pressing systems, set pieces, transfer rumours, great comebacks, goalkeeping "
            "drills, derby matches, counter attacks, youth prospects, tactical shifts, "
            "free kicks"
        ),
        _t(
            "the offside rule, the false nine, a back three, the title race, the transfer "
            "window, gegenpressing, the World Cup final, a relegation fight, VAR, "
            "the penalty shootout"
        ),
        _t(
            "read a formation, take a perfect penalty, defend a corner, scout young players, "
            "coach a youth team, break a low block, train like a pro keeper, "
            "analyse a match"
        ),
        _t("tactical, legendary, underrated, dramatic, clinical, fearless"),
        _t(
            "goal, pitch, midfield, striker, defender, coach, stadium, league, season, "
            "dribble, assist, referee, fans, kickoff, squad"
        ),
    ),
    _Topic(
        "jazz",
        0.7,
        _t(
            "bebop, swing, saxophone, piano trio, vinyl, improvisation, big band, "
            "jazz history, live sessions, standards"
        ),
        _t(
            "piano trios, bebop records, saxophone solos, jazz standards, big band "
            "arrangements, live sessions, walking bass lines, blue note albums, "
            "jam sessions, modal tunes"
        ),
        _t(
            "Kind of Blue, swing rhythm, improvisation, the blues scale, modal jazz, "
            "the Harlem renaissance, hard bop, the upright bass, scat singing, fusion"
        ),
        _t(
            "improvise over changes, listen to free jazz, start a vinyl collection, "
            "play a walking bass line, voice jazz chords, transcribe a solo, "
            "swing the eighth notes, read a lead sheet"
        ),
        _t("smoky, timeless, essential, soulful, late-night, groundbreaking"),
        _t(
            "saxophone, trumpet, piano, drums, bass, chord, melody, groove, club, record, "
            "session, quartet, rhythm, harmony, solo"
        ),
    ),
    _Topic(
        "space",
        1.0,
        _t(
            "astronomy, rockets, mars, telescopes, nasa, black holes, exoplanets, "
            "stargazing, space station, cosmology"
        ),
        _t(
            "rocket launches, black holes, exoplanets, Mars missions, telescope images, "
            "meteor showers, space stations, distant galaxies, lunar landings, "
            "solar storms"
        ),
        _t(
            "the James Webb telescope, dark matter, the Big Bang, life on Mars, "
            "a solar eclipse, the Moon, orbital mechanics, the Milky Way, Saturn's rings, "
            "gravity"
        ),
        _t(
            "spot the space station, photograph the Milky Way, choose a first telescope, "
            "find Jupiter tonight, understand a rocket launch, read a star chart, "
            "track a comet, watch a meteor shower"
        ),
        _t("cosmic, mysterious, astonishing, distant, stellar, mind-bending"),
        _t(
            "orbit, planet, star, galaxy, astronaut, launch, telescope, nebula, comet, "
            "asteroid, gravity, light-year, mission, satellite, universe"
        ),
    ),
    _Topic(
        "gardening",
        0.8,
        _t(
            "vegetables, houseplants, composting, roses, seeds, pruning, balcony garden, "
            "herbs, lawn care, permaculture"
        ),
        _t(
            "houseplants, tomato varieties, raised beds, compost piles, balcony gardens, "
            "spring bulbs, climbing roses, herb planters, seed trays, wildflower meadows"
        ),
        _t(
            "compost, the vegetable patch, a shade garden, pruning, soil health, "
            "a greenhouse, the monstera, crop rotation, watering, companion planting"
        ),
        _t(
            "start seeds indoors, prune a rose bush, build a raised bed, keep houseplants "
            "alive, make compost fast, grow tomatoes on a balcony, divide perennials, "
            "attract bees"
        ),
        _t("lush, low-maintenance, thriving, hardy, seasonal, fragrant"),
        _t(
            "soil, seeds, leaves, roots, bloom, garden, harvest, water, sunlight, "
            "pots, mulch, weeds, shovel, greenhouse, spring"
        ),
    ),
    _Topic(
        "fitness",
        1.2,
        _t(
            "running, strength training, yoga, mobility, marathon, home workouts, "
            "nutrition, cycling, hiit, recovery"
        ),
        _t(
            "home workouts, running plans, kettlebell routines, yoga flows, stretching "
            "habits, marathon tips, mobility drills, protein snacks, rest days, "
            "cycling intervals"
        ),
        _t(
            "the deadlift, a first 5k, core strength, recovery, the perfect squat, "
            "interval training, posture, a marathon taper, sleep, motivation"
        ),
        _t(
            "run your first 5k, do a proper push-up, build a home gym, stretch after "
            "running, start lifting weights, train for a marathon, fix your posture, "
            "stay motivated"
        ),
        _t("quick, intense, gentle, effective, sweaty, beginner-friendly"),
        _t(
            "workout, muscle, cardio, reps, sets, stamina, coach, training, heart rate, "
            "stretch, sweat, gym, pace, endurance, strength"
        ),
    ),
    _Topic(
        "travel",
        1.1,
        _t(
            "city breaks, backpacking, road trips, islands, budget travel, hiking, "
            "night trains, local food, travel tips, national parks"
        ),
        _t(
            "city breaks, road trips, night trains, hidden beaches, mountain huts, "
            "street markets, packing lists, island hops, hostels, walking tours"
        ),
        _t(
            "Lisbon, Kyoto, the Scottish Highlands, Patagonia, a night train to Vienna, "
            "Iceland's ring road, Marrakech, the Amalfi coast, jet lag, travel insurance"
        ),
        _t(
            "pack a carry-on, travel Europe by train, find cheap flights, plan a road trip, "
            "beat jet lag, eat like a local, travel solo, hike a long-distance trail"
        ),
        _t("hidden, affordable, breathtaking, slow, unforgettable, off-the-beaten-path"),
        _t(
            "journey, passport, map, coast, village, backpack, train, airport, ferry, "
            "mountain, trail, hotel, guide, border, sunset"
        ),
    ),
    _Topic(
        "photography",
        0.7,
        _t(
            "cameras, lenses, street photography, portraits, landscapes, film photography, "
            "editing, lighting, composition, night photography"
        ),
        _t(
            "prime lenses, portrait setups, film cameras, street shots, landscape photos, "
            "editing presets, lighting tricks, night shots, camera bags, photo walks"
        ),
        _t(
            "the rule of thirds, golden hour, exposure, the 50mm lens, black and white, "
            "depth of field, long exposure, colour grading, natural light, framing"
        ),
        _t(
            "shoot in manual mode, light a portrait, edit a landscape photo, photograph "
            "strangers, choose a first lens, develop film at home, shoot at night, "
            "frame a street scene"
        ),
        _t("moody, cinematic, sharp, minimalist, vintage, striking"),
        _t(
            "camera, lens, shutter, aperture, ISO, light, shadow, frame, portrait, "
            "tripod, flash, print, film, focus, sensor"
        ),
    ),
    _Topic(
        "gaming",
        1.3,
        _t(
            "indie games, rpg, speedruns, esports, retro games, strategy, game design, "
            "open world, co-op, reviews"
        ),
        _t(
            "indie games, boss fights, speedrun routes, retro consoles, strategy games, "
            "co-op campaigns, open worlds, game soundtracks, level designs, esports finals"
        ),
        _t(
            "game design, a perfect speedrun, the roguelike, pixel art, the Nintendo 64, "
            "difficulty, an open-world map, matchmaking, a boss rush, save files"
        ),
        _t(
            "beat a soulslike, start speedrunning, build a gaming PC, design a level, "
            "get into esports, collect retro games, play strategy games well, "
            "stream your games"
        ),
        _t("addictive, underrated, brutal, cozy, legendary, wholesome"),
        _t(
            "player, level, console, controller, quest, boss, score, character, "
            "multiplayer, pixel, arcade, patch, loot, guild, sandbox"
        ),
    ),
    _Topic(
        "finance",
        0.9,
        _t(
            "investing, budgeting, index funds, saving, retirement, personal finance, "
            "stocks, mortgages, side hustles, taxes"
        ),
        _t(
            "index funds, budgeting apps, savings goals, credit scores, side hustles, "
            "retirement accounts, dividend stocks, money habits, mortgage rates, "
            "emergency funds"
        ),
        _t(
            "compound interest, inflation, a first budget, the stock market, "
            "early retirement, debt, a pension, diversification, rent versus buy, taxes"
        ),
        _t(
            "build an emergency fund, start investing, pay off debt, read a balance sheet, "
            "negotiate a raise, budget on a low income, choose an index fund, "
            "save for a house"
        ),
        _t("smart, simple, frugal, long-term, practical, no-nonsense"),
        _t(
            "money, savings, budget, investment, portfolio, interest, bank, loan, "
            "income, expenses, market, fund, risk, wealth, tax"
        ),
    ),
    _Topic(
        "history",
        0.8,
        _t(
            "ancient rome, world war ii, medieval, archaeology, empires, biographies, "
            "revolutions, ancient egypt, cold war, maps"
        ),
        _t(
            "lost cities, forgotten battles, ancient empires, medieval castles, "
            "great explorers, royal dynasties, old maps, archaeological digs, "
            "revolutions, trade routes"
        ),
        _t(
            "the fall of Rome, the Silk Road, ancient Egypt, the printing press, "
            "the Cold War, the Vikings, the French Revolution, the Ottoman Empire, "
            "the Renaissance, Pompeii"
        ),
        _t(
            "read a medieval map, date an artefact, visit Roman ruins, research family "
            "history, understand the Cold War, tell myth from history, "
            "decode hieroglyphs, trace an old trade route"
        ),
        _t("forgotten, epic, ancient, turbulent, surprising, little-known"),
        _t(
            "empire, king, battle, century, archive, ruins, dynasty, war, treaty, "
            "chronicle, artefact, explorer, castle, kingdom, legacy"
        ),
    ),
    _Topic(
        "technology",
        1.2,
        _t(
            "gadgets, smartphones, programming, ai, open source, privacy, laptops, "
            "smart home, cybersecurity, startups"
        ),
        _t(
            "budget smartphones, mechanical keyboards, open source tools, smart home "
            "gadgets, privacy settings, coding tutorials, laptop reviews, home servers, "
            "password managers, startup stories"
        ),
        _t(
            "machine learning, the cloud, a first program, Linux, data privacy, "
            "the smartphone battery, encryption, the command line, USB-C, the internet"
        ),
        _t(
            "learn to code, secure your accounts, build a home server, pick a laptop, "
            "automate your home, switch to Linux, back up your photos, speed up an old PC"
        ),
        _t("clever, essential, hidden, powerful, open, futuristic"),
        _t(
            "software, device, code, app, battery, screen, network, data, chip, "
            "server, update, keyboard, privacy, startup, algorithm"
        ),
    ),
)

_NUMBERS = ("Three", "Four", "Five", "Six", "Seven", "Eight", "Ten", "Twelve")
_TITLE_TEMPLATES = (
    "{num} {adj} {nouns}",
    "How to {howto}",
    "The {adj} guide to {subject}",
    "{subject}, explained",
    "{num} mistakes people make with {subject}",
    "Why {subject} matters more than you think",
    "Inside the world of {nouns}",
    "A beginner's guide to {nouns}",
    "What nobody tells you about {subject}",
    "{adj} {nouns}, ranked",
    "Everything you need to know about {subject}",
    "{num} ways to {howto}",
)

# kind name, description, share of the catalogue, median length (s), lognormal sigma
_KINDS = (
    ("clip", "a short clip", 0.30, 45.0, 0.5),
    ("video", "a video", 0.35, 480.0, 0.6),
    ("article", "an article", 0.25, 300.0, 0.5),
    ("episode", "a podcast episode", 0.10, 2_400.0, 0.4),
)

_NEW_ITEM_SHARE = 0.05
_NEW_ITEM_POPULARITY = 0.15
_CROSS_TOPIC_SHARE = 0.10
_ZIPF_EXPONENT = 1.05
_ACTIVITY_SIGMA = 1.2
_MIN_EVENTS_PER_USER = 3
_REDRAWS = 4


def user_id(number: int) -> str:
    """The id of user ``number`` (1-based): ``demo-user-0001``."""
    return f"demo-user-{number:04d}"


def item_id(number: int) -> str:
    """The id of item ``number`` (1-based): ``demo-item-00001``."""
    return f"demo-item-{number:05d}"


@dataclass(frozen=True)
class _ItemModel:
    """What events need to know about the catalogue, as arrays indexed by item row."""

    ids: np.ndarray  # object array of str
    topic: np.ndarray  # int, index into TOPICS
    second_topic: np.ndarray  # int, -1 for none
    quality: np.ndarray
    created_at: np.ndarray
    duration: np.ndarray
    # Items sorted by topic and, for each, topic + cumulative popularity within the topic;
    # an item of topic t is drawn by searchsorted(cdf, t + u) for u uniform in [0, 1).
    by_topic: np.ndarray
    cdf: np.ndarray
    topic_end: np.ndarray  # one past the last position of each topic in ``by_topic``


@dataclass(frozen=True)
class _UserModel:
    """Latent tastes, as compact arrays indexed by user row."""

    topics: np.ndarray  # (n, 3) int8 topic indices, by weight descending; -1 pads
    weights: np.ndarray  # (n, 3) float64, rows sum to 1, zeros pad
    explore: np.ndarray  # chance that an exposure ignores the user's tastes
    first_seen: np.ndarray  # when the user starts being active
    events: np.ndarray  # exact number of event rows of each user


@dataclass(frozen=True, eq=False)
class DemoWorld:
    """A generated world: ``items`` and ``users`` frames, and events on demand.

    ``users`` has ``user_id``, ``top_topic`` (the topic the user likes most), ``topics`` (the
    user's topics, most liked first) and ``n_events`` (how many event rows the user has).
    """

    seed: int
    scale: float
    n_events: int
    start: float
    end: float
    items: pd.DataFrame
    users: pd.DataFrame
    _items: _ItemModel = field(repr=False)
    _users: _UserModel = field(repr=False)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def iter_events(self, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
        """Events in chunks of ``chunk_rows`` rows (the last may be shorter).

        Chunks carry a running index (0.. in the first, continuing in the next), like
        ``pandas.read_csv(chunksize=...)``, so concatenating them gives one frame.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        pending: list[dict[str, np.ndarray]] = []
        pending_rows = 0
        emitted = 0
        n_blocks = math.ceil(self.n_users / BLOCK_USERS)
        for block in range(n_blocks):
            arrays = self._block_events(block)
            pending.append(arrays)
            pending_rows += len(arrays["item"])
            if pending_rows < chunk_rows:
                continue
            merged = _concat(pending)
            offset = 0
            while pending_rows - offset >= chunk_rows:
                yield self._frame(merged, offset, offset + chunk_rows, emitted)
                emitted += chunk_rows
                offset += chunk_rows
            pending = [{k: v[offset:] for k, v in merged.items()}]
            pending_rows -= offset
        if pending_rows:
            merged = _concat(pending)
            yield self._frame(merged, 0, pending_rows, emitted)

    def events(self) -> pd.DataFrame:
        """All events as one frame (fine at small scales; use ``iter_events`` beyond)."""
        return next(self.iter_events(chunk_rows=max(self.n_events, 1)), _empty_events())

    def react(
        self, user_ids: Sequence[str], item_ids: Sequence[str], rng: np.random.Generator
    ) -> pd.DataFrame:
        """How each user reacts to being shown each item (pairs aligned), by the same
        planted tastes that made the world's events: columns ``affinity``, ``viewed``,
        ``dwell_seconds``, ``liked``, ``disliked``. A user or item the world does not know
        (a new item, a stranger) gets NaN affinity and no reaction."""
        user_row = pd.Index(self.users[USER_ID]).get_indexer(list(user_ids))
        item_row = pd.Index(self._items.ids).get_indexer(list(item_ids))
        known = (user_row >= 0) & (item_row >= 0)
        n = len(user_row)
        out = pd.DataFrame(
            {
                "affinity": np.full(n, np.nan),
                "viewed": np.zeros(n, bool),
                "dwell_seconds": np.full(n, np.nan),
                "liked": np.zeros(n, bool),
                "disliked": np.zeros(n, bool),
            }
        )
        if not known.any():
            return out
        users, items = user_row[known], item_row[known]
        taste = _taste(self._users.topics[users].astype(np.int64), self._users.weights[users])
        affinity = _affinity(rng, taste, self._items, items)
        viewed, dwell, liked, disliked = _reactions(rng, affinity, self._items.duration[items])
        out.loc[known, "affinity"] = affinity
        out.loc[known, "viewed"] = viewed
        out.loc[known, "dwell_seconds"] = np.where(viewed, dwell, np.nan)
        out.loc[known, "liked"] = liked
        out.loc[known, "disliked"] = disliked
        return out

    def hidden_likes(self, touched: pd.DataFrame, seed: int) -> pd.DataFrame:
        """Per user, the catalogue items without an event of theirs (``touched``: the
        ``user_id``, ``item_id`` pairs with one) that they like by the planted tastes: one
        draw of ``react`` over every (user, item) pair with ``seed``. What a feed for this
        world should find; columns ``user_id``, ``item_id``."""
        users = self.users[USER_ID].to_numpy()
        items = self.items[ITEM_ID].to_numpy()
        pairs = pd.DataFrame(
            {USER_ID: np.repeat(users, len(items)), ITEM_ID: np.tile(items, len(users))}
        )
        reactions = self.react(
            pairs[USER_ID].tolist(), pairs[ITEM_ID].tolist(), np.random.default_rng(seed)
        )
        liked = pairs[reactions["liked"].to_numpy()]
        seen = pd.MultiIndex.from_frame(touched[[USER_ID, ITEM_ID]].astype(str))
        fresh = ~pd.MultiIndex.from_frame(liked).isin(seen)
        return liked[fresh].reset_index(drop=True)

    # -- generation ----------------------------------------------------------------------

    def _frame(
        self, arrays: dict[str, np.ndarray], lo: int, hi: int, first_row: int
    ) -> pd.DataFrame:
        users = arrays["user"][lo:hi]
        first_user = int(users[0]) if hi > lo else 0
        last_user = int(users[-1]) if hi > lo else -1
        labels = np.array([user_id(i + 1) for i in range(first_user, last_user + 1)], object)
        user_ids = labels[users - first_user]
        types = np.asarray(EVENT_TYPES, dtype=object)[arrays["type"][lo:hi]]
        return events_frame(
            user_ids,
            self._items.ids[arrays["item"][lo:hi]],
            types,
            arrays["timestamp"][lo:hi],
            dwell_seconds=arrays["dwell"][lo:hi],
            index=pd.RangeIndex(first_row, first_row + (hi - lo)),
        )

    def _block_events(self, block: int) -> dict[str, np.ndarray]:
        lo_user = block * BLOCK_USERS
        hi_user = min(self.n_users, lo_user + BLOCK_USERS)
        return _simulate_block(
            np.random.default_rng([self.seed, _EVENTS_STREAM, block]),
            self._items,
            self._users,
            lo_user,
            hi_user,
            end=self.end,
        )


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _empty_events() -> pd.DataFrame:
    return events_frame(np.empty(0, object), np.empty(0, object), np.empty(0, object), np.empty(0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- the world --------------------------------------------------------------------------


def generate_world(
    seed: int = 42,
    scale: float = 1.0,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    n_events: int | None = None,
) -> DemoWorld:
    """Build a demo world; the same arguments always give identical frames.

    See the module docstring for how sizes follow ``scale``.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError("seed must be a non-negative integer")
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError("scale must be a positive number")
    users = max(1, round(USERS_PER_SCALE * scale)) if n_users is None else n_users
    items = (
        int(np.clip(round(ITEMS_PER_SQRT_SCALE * math.sqrt(scale)), MIN_ITEMS, MAX_ITEMS))
        if n_items is None
        else n_items
    )
    events = round(EVENTS_PER_SCALE * scale) if n_events is None else n_events
    events = max(events, users)
    if users < 1 or items < len(TOPICS):
        raise ValueError(f"need at least 1 user and {len(TOPICS)} items")

    seed = int(seed)
    end = WORLD_END
    start = end - WINDOW_DAYS * DAY
    item_model, items_df = _make_items(
        np.random.default_rng([seed, _ITEMS_STREAM]), items, start, end
    )
    user_model, users_df = _make_users(seed, users, events, start, end)
    return DemoWorld(
        seed=seed,
        scale=float(scale),
        n_events=int(user_model.events.sum()),
        start=start,
        end=end,
        items=items_df,
        users=users_df,
        _items=item_model,
        _users=user_model,
    )


def _make_items(
    rng: np.random.Generator, n: int, start: float, end: float
) -> tuple[_ItemModel, pd.DataFrame]:
    n_topics = len(TOPICS)
    share = np.array([t.weight for t in TOPICS]) ** 0.5
    topic = rng.choice(n_topics, size=n, p=share / share.sum())
    topic[:n_topics] = np.arange(n_topics)  # every topic has items
    topic = rng.permutation(topic)

    cross = rng.random(n) < _CROSS_TOPIC_SHARE
    second = (topic + rng.integers(1, n_topics, size=n)) % n_topics
    second = np.where(cross, second, -1)

    kind_share = np.array([k[2] for k in _KINDS])
    kind = rng.choice(len(_KINDS), size=n, p=kind_share / kind_share.sum())
    median = np.array([k[3] for k in _KINDS])[kind]
    sigma = np.array([k[4] for k in _KINDS])[kind]
    duration = np.maximum(5.0, np.round(median * np.exp(sigma * rng.standard_normal(n))))

    new = np.zeros(n, dtype=bool)
    new[rng.permutation(n)[: max(1, round(_NEW_ITEM_SHARE * n))]] = True
    old_span = (end - start) - 8 * DAY
    catalogue = start + old_span * rng.random(n) ** 1.6
    fresh = end - 2.5 * DAY + (2.5 * DAY - 2 * 3_600.0) * rng.random(n)
    created: np.ndarray = np.round(np.where(new, fresh, catalogue))

    # Zipf-like popularity within each topic: a random rank per item.
    popularity = np.empty(n)
    for t in range(n_topics):
        members = np.flatnonzero(topic == t)
        ranks = rng.permutation(len(members)) + 1
        popularity[members] = ranks.astype(float) ** -_ZIPF_EXPONENT
    popularity[new] *= _NEW_ITEM_POPULARITY
    # Popular items are a little better on average (they got popular for a reason).
    log_pop = np.log(popularity)
    quality = 0.4 * rng.standard_normal(n) + 0.25 * (log_pop - log_pop.mean()) / log_pop.std()

    by_topic = np.argsort(topic, kind="stable")
    cdf = np.empty(n)
    topic_end = np.searchsorted(topic[by_topic], np.arange(n_topics), side="right")
    lo = 0
    for t in range(n_topics):
        hi = int(topic_end[t])
        weights = np.cumsum(popularity[by_topic[lo:hi]])
        segment = weights / weights[-1]
        segment[-1] = 1.0
        cdf[lo:hi] = t + segment
        lo = hi

    ids = np.array([item_id(i + 1) for i in range(n)], dtype=object)
    titles, texts, tags = _item_words(rng, topic, second, kind)
    model = _ItemModel(
        ids=ids,
        topic=topic,
        second_topic=second,
        quality=quality,
        created_at=created,
        duration=duration,
        by_topic=by_topic,
        cdf=cdf,
        topic_end=topic_end,
    )
    frame = items_frame(
        ids,
        titles,
        texts,
        tags,
        [TOPICS[t].name for t in topic],
        created_at=created,
        duration_seconds=duration,
    )
    return model, frame


def _item_words(
    rng: np.random.Generator, topic: np.ndarray, second: np.ndarray, kind: np.ndarray
) -> tuple[list[str], list[str], list[list[str]]]:
    """Titles, descriptions and tags from each item's topic vocabulary."""
    n = len(topic)
    # Draw every random index up front (vectorized), then only format strings in the loop.
    template = rng.integers(0, len(_TITLE_TEMPLATES), size=n)
    picks = rng.integers(0, 1 << 30, size=(n, 10))
    n_tags = rng.integers(2, 5, size=n)
    episode = rng.integers(1, 200, size=n)
    titles, texts, tags = [], [], []
    for i in range(n):
        words = TOPICS[topic[i]]
        p = picks[i]

        def pick(options: tuple[str, ...], slot: int, _p: np.ndarray = p) -> str:
            return options[int(_p[slot]) % len(options)]

        slots = {
            "num": pick(_NUMBERS, 0),
            "adj": pick(words.adjectives, 1),
            "nouns": pick(words.nouns, 2),
            "subject": pick(words.subjects, 3),
            "howto": pick(words.howto, 4),
        }
        title = _TITLE_TEMPLATES[template[i]].format(**slots)
        title = title[0].upper() + title[1:]
        kind_name, kind_text = _KINDS[kind[i]][0], _KINDS[kind[i]][1]
        if kind_name == "episode":
            title = f"Ep. {episode[i]}: {title}"
        start_tag = int(p[5]) % len(words.tags)
        item_tags = [words.tags[(start_tag + 3 * k) % len(words.tags)] for k in range(n_tags[i])]
        vocab = words.words
        w = [vocab[(int(p[6]) + 5 * k) % len(vocab)] for k in range(3)]
        about = f"{slots['subject']} and {pick(words.nouns, 7)}"
        text = (
            f"{title}. {kind_text.capitalize()} about {about}, "
            f"with {pick(words.adjectives, 8).lower()} notes on {w[0]}, {w[1]} and {w[2]}."
        )
        if second[i] >= 0:
            other = TOPICS[second[i]]
            cross_tag = other.tags[int(p[9]) % len(other.tags)]
            item_tags.append(cross_tag)
            text += f" With a detour into {other.name}: {cross_tag}."
        titles.append(title)
        texts.append(text)
        tags.append(list(dict.fromkeys(item_tags)))
    return titles, texts, tags


def _make_users(
    seed: int, n: int, n_events: int, start: float, end: float
) -> tuple[_UserModel, pd.DataFrame]:
    n_topics = len(TOPICS)
    log_pop = np.log(np.array([t.weight for t in TOPICS]))
    topics = np.empty((n, 3), dtype=np.int8)
    weights = np.empty((n, 3))
    explore = np.empty(n)
    first_seen = np.empty(n)
    for block in range(math.ceil(n / BLOCK_USERS)):
        lo, hi = block * BLOCK_USERS, min(n, (block + 1) * BLOCK_USERS)
        rng = np.random.default_rng([seed, _USERS_STREAM, block])
        size = hi - lo
        # 1-3 distinct topics, drawn by popularity (Gumbel top-k), weighted by a Dirichlet.
        keys = log_pop + rng.gumbel(size=(size, n_topics))
        chosen = np.argsort(-keys, axis=1, kind="stable")[:, :3]
        count = rng.choice(3, size=size, p=[0.35, 0.45, 0.20]) + 1
        raw = rng.gamma(2.0, size=(size, 3))
        raw[np.arange(3)[None, :] >= count[:, None]] = 0.0
        order = np.argsort(-raw, axis=1, kind="stable")
        raw = np.take_along_axis(raw, order, axis=1)
        chosen = np.take_along_axis(chosen, order, axis=1)
        chosen[raw == 0.0] = -1
        topics[lo:hi] = chosen
        weights[lo:hi] = raw / raw.sum(axis=1, keepdims=True)
        explore[lo:hi] = rng.beta(2.0, 14.0, size=size)
        first_seen[lo:hi] = start + 0.85 * (end - start) * rng.beta(1.0, 3.0, size=size)

    counts = _allocate_events(np.random.default_rng([seed, _ACTIVITY_STREAM]), n, n_events)
    model = _UserModel(
        topics=topics, weights=weights, explore=explore, first_seen=first_seen, events=counts
    )
    names = np.array([t.name for t in TOPICS], dtype=object)
    topic_lists = np.empty(n, dtype=object)
    topic_lists[:] = [[str(names[t]) for t in row if t >= 0] for row in topics.tolist()]
    frame = pd.DataFrame(
        {
            USER_ID: pd.Series([user_id(i + 1) for i in range(n)], dtype="str"),
            "top_topic": pd.Series(names[topics[:, 0]], dtype="str"),
            "topics": pd.Series(topic_lists, dtype=object),
            "n_events": counts,
        }
    )
    return model, frame


def _allocate_events(rng: np.random.Generator, n: int, total: int) -> np.ndarray:
    """Lognormal activity per user, rounded so the counts sum to exactly ``total``."""
    activity = rng.lognormal(0.0, _ACTIVITY_SIGMA, size=n)
    # The first user is the one a demo shows: give it a history worth looking at.
    activity[0] = max(activity[0], float(np.quantile(activity, 0.8)))
    floor = min(_MIN_EVENTS_PER_USER, total // n)
    share = activity / activity.sum() * (total - floor * n)
    counts = np.floor(share).astype(np.int64)
    missing = int(total - floor * n - counts.sum())
    if missing:
        counts[np.argsort(-(share - counts), kind="stable")[:missing]] += 1
    return counts + floor


def _draw_items(rng: np.random.Generator, items: _ItemModel, topic: np.ndarray) -> np.ndarray:
    position = np.searchsorted(items.cdf, topic + rng.random(len(topic)), side="right")
    return items.by_topic[np.minimum(position, items.topic_end[topic] - 1)]


def _taste(user_topics: np.ndarray, user_weights: np.ndarray) -> np.ndarray:
    """taste[u, t]: user u's weight on topic t relative to their favourite; the extra last
    column stays 0 and is what a second topic of -1 (none) indexes."""
    taste = np.zeros((len(user_topics), len(TOPICS) + 1))
    for k in range(user_topics.shape[1]):
        has = np.flatnonzero(user_topics[:, k] >= 0)
        taste[has, user_topics[has, k]] = user_weights[has, k] / user_weights[has, 0]
    return taste


def _affinity(
    rng: np.random.Generator, taste: np.ndarray, items: _ItemModel, item: np.ndarray
) -> np.ndarray:
    """Affinity in (0, 1) of each exposure (``taste`` rows aligned with ``item``): the
    user's taste for the item's topic (and a little for its second topic), the item's
    quality, and noise."""
    rows = np.arange(len(item))
    pref = taste[rows, items.topic[item]]
    pref = np.maximum(pref, 0.6 * taste[rows, items.second_topic[item]])
    logit = 3.6 * pref - 2.0 + items.quality[item] + 0.7 * rng.standard_normal(len(item))
    return _sigmoid(logit)


def _reactions(
    rng: np.random.Generator, affinity: np.ndarray, duration: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a user does with an exposure: (viewed, dwell, liked, disliked). A high affinity
    gives a long view, often a like; a low one a skip or a bounce, now and then a dislike."""
    n = len(affinity)
    viewed = rng.random(n) < _sigmoid(5.0 * (affinity - 0.35))
    fraction = rng.beta(0.3 + 10.0 * affinity**2, 0.6 + 6.0 * (1.0 - affinity))
    dwell = np.round(fraction * duration, 1)
    liked = viewed & (rng.random(n) < 0.25 * affinity**3 * np.where(fraction > 0.3, 1.0, 0.2))
    disliked = ~liked & (rng.random(n) < 0.15 * (1.0 - affinity) ** 3)
    return viewed, dwell, liked, disliked


def _simulate_block(
    rng: np.random.Generator,
    items: _ItemModel,
    users: _UserModel,
    lo_user: int,
    hi_user: int,
    *,
    end: float,
) -> dict[str, np.ndarray]:
    """Event rows of users ``lo_user..hi_user-1``: grouped by user, in time order."""
    quota = users.events[lo_user:hi_user]
    local = np.repeat(np.arange(hi_user - lo_user), quota)
    n = len(local)  # exposures: one per row of quota, trimmed below once likes are added
    user_topics = users.topics[lo_user:hi_user].astype(np.int64)
    user_weights = users.weights[lo_user:hi_user]

    # Which topic the user is shown: from their tastes, or anything when exploring.
    taste_cdf = np.cumsum(user_weights, axis=1)
    draw = rng.random(n)
    slot = (draw >= taste_cdf[:, 0][local]).astype(np.int64) + (draw >= taste_cdf[:, 1][local])
    topic = user_topics[local, slot]
    topic_weight = np.array([t.weight for t in TOPICS])
    random_topic = np.searchsorted(np.cumsum(topic_weight) / topic_weight.sum(), rng.random(n))
    exploring = (rng.random(n) < users.explore[lo_user:hi_user][local]) | (topic < 0)
    topic = np.where(exploring, random_topic.clip(0, len(TOPICS) - 1), topic)

    # When: uniform over the user's active time. Which item: Zipf-like within the topic,
    # among the items that exist by then (a few redraws; an item still too new after those
    # moves the exposure after its creation instead).
    arrival = users.first_seen[lo_user:hi_user][local]
    when = arrival + rng.random(n) * (end - arrival)
    item = _draw_items(rng, items, topic)
    for _ in range(_REDRAWS):
        too_new = np.flatnonzero(items.created_at[item] > when)
        if not len(too_new):
            break
        item[too_new] = _draw_items(rng, items, topic[too_new])
    created = items.created_at[item]
    late = created > when
    when[late] = created[late] + rng.random(int(late.sum())) * (end - created[late])

    # Affinity from the user's taste for the item's topic (and its second topic, if any).
    taste = _taste(user_topics, user_weights)
    affinity = _affinity(rng, taste[local], items, item)
    viewed, dwell, liked, disliked = _reactions(rng, affinity, items.duration[item])

    # Exactly ``quota`` rows per user: keep exposures in draw order until the quota is
    # filled (times are drawn afterwards, so this does not bias when events happen).
    extra = liked | disliked
    rows = 1 + extra.astype(np.int64)
    used = np.cumsum(rows)
    first = np.cumsum(quota) - quota  # index of each user's first exposure
    before_user = np.where(first > 0, used[np.maximum(first - 1, 0)], 0)
    before = used - rows - before_user[local]  # rows this user already has
    keep = before < quota[local]
    extra &= keep & (before + 2 <= quota[local])

    # A like or dislike follows its exposure by the dwell plus a few seconds (so it may land
    # just after ``end``).
    follow = np.where(viewed, dwell, 0.0) + 1.0 + 4.0 * rng.random(n)
    when_extra = when + follow

    primary = np.flatnonzero(keep)
    secondary = np.flatnonzero(extra)
    user = np.concatenate([local[primary], local[secondary]]) + lo_user
    timestamp = np.round(np.concatenate([when[primary], when_extra[secondary]]), 3)
    kind = np.concatenate(
        [
            np.where(viewed[primary], _VIEW, _SKIP),
            np.where(liked[secondary], _LIKE, _DISLIKE),
        ]
    ).astype(np.int8)
    dwell_all = np.concatenate(
        [np.where(viewed[primary], dwell[primary], np.nan), np.full(len(secondary), np.nan)]
    )
    # Sort by (user, time, type) through one integer key: much faster than a lexsort.
    first_time = float(timestamp.min()) if len(timestamp) else 0.0
    millis = np.round((timestamp - first_time) * 1_000.0).astype(np.int64)  # < 2**38
    key = ((user - lo_user).astype(np.int64) << 40) | (millis << 2) | kind
    order = np.argsort(key, kind="stable")
    return {
        "user": user[order],
        "item": np.concatenate([item[primary], item[secondary]])[order],
        "type": kind[order],
        "timestamp": timestamp[order],
        "dwell": dwell_all[order],
    }
