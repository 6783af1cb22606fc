"""The operators' web console under ``/ui``: overview, user inspector, items, models and
evaluation reports, rendered on the server (Jinja2, a little plain JavaScript, every asset
in the package: it works offline).

Access uses the API's keys. With keys configured, ``/ui/login`` takes a key and keeps it
in an HttpOnly, SameSite=Strict cookie scoped to ``/ui``; pages need the read scope and
actions the write scope, and without a key no page shows data. Without keys the service
binds to loopback only (``recsys.api.server``), as for the API.

Actions (activate a version) are POSTed forms carrying a CSRF token that must equal the
``SameSite=Strict`` token cookie (double submit): a form posted from another site carries
no cookie, so it fails even when no keys are configured and the console is on loopback.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from prometheus_client.parser import text_string_to_metric_families

from recsys import release
from recsys.api.auth import ANONYMOUS, Principal, fingerprint
from recsys.api.operations import swapped
from recsys.api.routing import Route, metrics_of
from recsys.api.schemas import storable_text
from recsys.columns import ITEM_ID, MAX_ID_LENGTH
from recsys.config import Settings
from recsys.evaluation.report_comparison import compare_reports
from recsys.experiments import experiment_report
from recsys.serving import Recommender
from recsys.serving.inspect import inspect_feed
from recsys.serving.learned import LearnedRanker
from recsys.serving.types import FeedFilters, InvalidCursor, NoModel, UnknownItem
from recsys.store.catalog import load_items
from recsys.store.events import event_time_range, user_events
from recsys.store.experiments import list_experiments
from recsys.store.impressions import user_impressions
from recsys.store.overview import (
    DAY,
    events_per_day,
    item_events_per_day,
    recent_type_mix,
    store_counts,
)
from recsys.store.runs import get_run, list_runs

log = logging.getLogger("recsys.api.console")

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
# A name a template misspells is an error in the tests, not a blank on a page.
templates.env.undefined = jinja2.StrictUndefined

KEY_COOKIE = "recsys_console_key"
CSRF_COOKIE = "recsys_console_csrf"
COOKIE_PATH = "/ui"
OVERVIEW_DAYS = 30
# The event-type mix is of the newest events, a bounded read however large the store.
MIX_EVENTS = 20_000
SHOWN_ROWS = 60
REPORTED_EXPERIMENTS = 5
SIMILAR_KINDS = ("content", "behavioural", "blend", "item2item")
REPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Console pages load only their own assets; a report page is self-contained (inline CSS,
# plots as data: images) and runs no script at all.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
REPORT_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'; "
    "base-uri 'none'; sandbox"
)

console = APIRouter(route_class=Route, include_in_schema=False)


# --- access ----------------------------------------------------------------------------------


def signed_in(request: Request) -> Principal | None:
    """Who is looking: the key in the console cookie (or an Authorization header), the
    anonymous writer when no keys are configured, None when nobody valid."""
    ring = request.app.state.keys
    if not ring.enabled:
        return ANONYMOUS
    presented = urllib.parse.unquote(request.cookies.get(KEY_COOKIE) or "")
    if presented:
        presented = presented.encode("utf-8").decode("latin-1")
    else:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else ""
    if not presented:
        return None
    principal: Principal | None = ring.identify(presented)
    return principal


def _to_login(request: Request) -> RedirectResponse:
    """To the sign-in form, coming back to this page after it. The path as sent (still
    percent-encoded), so an id such as ``%41`` comes back as itself; after a POST, to the
    page the form was on (a POST cannot be repeated by a redirect)."""
    if request.method != "GET":
        target = "/ui/models"
    else:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        target = raw.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={urllib.parse.quote(target, safe='')}", 303)


def _safe_next(value: str | None) -> str:
    """Only a console path: never an absolute URL an attacker could send a user to."""
    if value and value.startswith("/ui") and not value.startswith("//"):
        return value
    return "/ui"


def _csrf_token(request: Request) -> str:
    token = request.cookies.get(CSRF_COOKIE)
    if not token or not CSRF_TOKEN.fullmatch(token):
        token = getattr(request.state, "csrf", None) or secrets.token_hex(16)
    request.state.csrf = token
    return token


CSRF_TOKEN = re.compile(r"[0-9a-f]{32}")


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site or origin. A cookie
    planted from a sibling origin (another port on localhost, a subdomain) can match the
    double-submit token, so the browser's own statement is checked as well."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        own = f"{request.url.scheme}://{request.url.netloc}"
        return origin == own
    return origin != "null"


def _csrf_ok(request: Request, submitted: str | None) -> bool:
    """The form's token equals the SameSite=Strict cookie's, and the request is not
    cross-origin. Both must be tokens this console issues (hex), compared as bytes."""
    cookie = request.cookies.get(CSRF_COOKIE) or ""
    if not (CSRF_TOKEN.fullmatch(cookie) and CSRF_TOKEN.fullmatch(submitted or "")):
        return False
    return _same_origin(request) and hmac.compare_digest(
        cookie.encode(), (submitted or "").encode()
    )


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    principal: Principal | None,
    status_code: int = 200,
) -> HTMLResponse:
    """A console page with its CSRF token, the signed-in key's scope and safe headers."""
    token = _csrf_token(request)
    keys_enabled = request.app.state.keys.enabled
    response = templates.TemplateResponse(
        request,
        template,
        {
            "csrf": token,
            "principal": principal,
            "keys_enabled": keys_enabled,
            "can_write": principal is not None and principal.can("write"),
            "nav": template.split(".")[0],
            **context,
        },
        status_code=status_code,
    )
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=_secure(request),
    )
    response.headers["Content-Security-Policy"] = CONSOLE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's only kind), without a multipart parser."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body, keep_blank_values=True).items()}


@console.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    if not request.app.state.keys.enabled:
        return RedirectResponse(_safe_next(next), 303)
    return _page(request, "login.html", {"next": _safe_next(next), "error": None}, None)


@console.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if not request.app.state.keys.enabled:
        return RedirectResponse(target, 303)
    if not _csrf_ok(request, form.get("csrf")):
        return _page(
            request,
            "login.html",
            {"next": target, "error": "The form expired; sign in again."},
            None,
            403,
        )
    key = form.get("key", "")
    # KeyRing compares what a header carries (latin-1 text of the bytes sent): the same
    # bytes here, so a non-ASCII key signs in as it authenticates over the API.
    principal = (
        request.app.state.keys.identify(key.encode("utf-8").decode("latin-1")) if key else None
    )
    if principal is None:
        log.info("console sign-in refused (fingerprint %s)", fingerprint(key))
        return _page(request, "login.html", {"next": target, "error": "Unknown key."}, None, 401)
    log.info("console sign-in: key %s (%s)", principal.fingerprint, principal.scope)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        KEY_COOKIE,
        urllib.parse.quote(key, safe=""),
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=_secure(request),
    )
    # A new token for the signed-in session: one planted before sign-in is worth nothing.
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_hex(16),
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=_secure(request),
    )
    return response


@console.post("/ui/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    if not _csrf_ok(request, form.get("csrf")):
        return Response("the form expired", status_code=403)
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(KEY_COOKIE, path=COOKIE_PATH)
    response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
    return response


# --- overview --------------------------------------------------------------------------------


def _when(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "—"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


templates.env.filters["when"] = _when
templates.env.filters["day"] = _day


def _bars(values: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """Rows for a bar chart: label, value and width in percent of the largest."""
    rows = [(label, float(value)) for label, value in values]
    top = max((abs(v) for _, v in rows), default=0.0) or 1.0
    return [{"label": k, "value": v, "width": round(100 * abs(v) / top, 1)} for k, v in rows]


def _histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a Prometheus histogram (cumulative buckets), interpolated
    linearly inside the bucket, as PromQL's histogram_quantile does."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            inside = count - previous_count
            fraction = (rank - previous_count) / inside if inside else 1.0
            return previous_bound + (bound - previous_bound) * fraction
        previous_bound, previous_count = bound, count
    return previous_bound


def service_figures(exposition: bytes) -> dict[str, Any]:
    """Feed latency, the source mix and impressions from the service's own metrics (of
    every worker, when several share a metrics directory)."""
    buckets: dict[float, float] = {}
    count = 0.0
    sources: dict[str, float] = {}
    impressions: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition.decode("utf-8", "replace")):
        for sample in family.samples:
            labels = sample.labels
            if family.name == "recsys_http_request_duration_seconds":
                if labels.get("route") != "/v1/users/{user_id}/feed":
                    continue
                if labels.get("status") != "200":
                    continue
                if sample.name.endswith("_bucket"):
                    bound = float(labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
            elif family.name == "recsys_feed_items" and sample.name.endswith("_total"):
                sources[labels["source"]] = sources.get(labels["source"], 0.0) + sample.value
            elif family.name == "recsys_impressions" and sample.name.endswith("_total"):
                outcome = labels["outcome"]
                impressions[outcome] = impressions.get(outcome, 0.0) + sample.value
    ordered = sorted(buckets.items())
    total_items = sum(sources.values()) or 1.0
    return {
        "feeds": int(count),
        "p50_ms": _ms(_histogram_quantile(ordered, 0.5)),
        "p95_ms": _ms(_histogram_quantile(ordered, 0.95)),
        "p99_ms": _ms(_histogram_quantile(ordered, 0.99)),
        "source_mix": _bars(
            (name, round(100 * value / total_items, 1))
            for name, value in sorted(sources.items(), key=lambda kv: -kv[1])
        ),
        "impressions_written": int(impressions.get("written", 0)),
        "impressions_dropped": int(impressions.get("dropped", 0)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _recommender(request: Request) -> Recommender | None:
    recommender: Recommender | None = request.app.state.recommender
    return recommender


def _error(request: Request, principal: Principal | None, message: str, status: int) -> Response:
    return _page(request, "error.html", {"message": message}, principal, status)


def _viewer(request: Request) -> tuple[Principal, Recommender] | Response:
    """Who is looking and the recommender to show them, or the answer instead: the
    sign-in form without a valid key, a 503 page while the service starts."""
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    recommender = _recommender(request)
    if recommender is None:
        return _error(request, principal, "The service is starting.", 503)
    return principal, recommender


@console.get("/ui", response_class=HTMLResponse)
def overview(request: Request) -> Response:
    opened = _viewer(request)
    if isinstance(opened, Response):
        return opened
    principal, recommender = opened
    with recommender.store.read() as conn:
        counts = store_counts(conn)
        newest = event_time_range(conn)[1]
        last_day = math.floor((newest or time.time()) / DAY) * DAY
        days = [last_day - DAY * back for back in range(OVERVIEW_DAYS - 1, -1, -1)]
        per_day = events_per_day(conn, days)
        mix = recent_type_mix(conn, MIX_EVENTS)
        version = recommender.model_version
        run = get_run(conn, version) if version else None
    ranker = None
    state = recommender.state
    if state is not None:
        ranker = "learned" if isinstance(recommender.ranker_for(state), LearnedRanker) else "blend"
    gate = (run.metrics.get("gate") or {}) if run else {}
    experiment = recommender.experiment
    return _page(
        request,
        "overview.html",
        {
            "counts": counts,
            "days": _bars((_day(day), value) for day, value in zip(days, per_day, strict=True)),
            "mix": _bars(sorted(mix.items(), key=lambda kv: -kv[1])),
            "mix_events": sum(mix.values()),
            "window_days": OVERVIEW_DAYS,
            "newest": newest,
            "version": version,
            "run": run,
            "gate": {k: v for k, v in gate.items() if isinstance(v, dict)},
            "gate_skipped": gate.get("skipped"),
            "ranker": ranker,
            "ranker_metrics": (run.metrics.get("ranker") or {}) if run else {},
            "experiment": experiment.name if experiment is not None else None,
            "service": service_figures(metrics_of(request).exposition()),
        },
        principal,
    )


# --- users -----------------------------------------------------------------------------------


@console.get("/ui/users", response_class=HTMLResponse)
def find_user(request: Request, user_id: str | None = None) -> Response:
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    if user_id and user_id.strip():
        return RedirectResponse(f"/ui/users/{urllib.parse.quote(user_id.strip(), safe='')}", 303)
    return _page(request, "find.html", {"kind": "user"}, principal)


def _labels(value: str | None) -> list[str] | None:
    parts = [p.strip() for p in (value or "").split(",") if p.strip()]
    return parts or None


def _bad_id(value: str) -> str | None:
    """Why an id from the address cannot be an id (the API's rules), or None."""
    if len(value) > MAX_ID_LENGTH:
        return f"an id has at most {MAX_ID_LENGTH} characters"
    try:
        storable_text(value)
    except ValueError as exc:
        return f"not a valid id: {exc}"
    return None


def _page_size(value: str | None) -> int:
    """The page size asked for, within 1..100; anything else (an emptied field) is 20."""
    try:
        return max(1, min(int(value or 20), 100))
    except ValueError:
        return 20


@console.get("/ui/users/{user_id:path}", response_class=HTMLResponse)
def user_page(
    request: Request,
    user_id: str,
    limit: str | None = None,
    category: str | None = None,
    tag: str | None = None,
    cursor: str | None = None,
) -> Response:
    opened = _viewer(request)
    if isinstance(opened, Response):
        return opened
    principal, recommender = opened
    problem = _bad_id(user_id) or next(
        (p for p in map(_bad_id, (category or "", tag or "")) if p), None
    )
    if problem:
        return _error(request, principal, problem, 422)
    page_size = _page_size(limit)
    try:
        # One category from the list (a name may hold a comma); tags comma separated.
        filters = FeedFilters(categories=[category] if category else None, tags=_labels(tag))
    except ValueError as exc:
        return _error(request, principal, str(exc), 422)
    with recommender.store.read() as conn:
        timeline = user_events(conn, user_id, limit=200)
        shown = user_impressions(conn, user_id, limit=SHOWN_ROWS)
    acted = set(timeline[ITEM_ID].tolist()) if len(timeline) else set()
    try:
        inspection = inspect_feed(recommender, user_id, page_size, filters, cursor or None)
    except InvalidCursor:
        return _error(
            request, principal, "That cursor belongs to another feed (or is damaged).", 400
        )
    except NoModel:
        return _error(
            request, principal, "No model has been published yet: run `recsys train`.", 503
        )
    catalogue = recommender.state.catalogue if recommender.state else None

    def title(item_id: str) -> str:
        if catalogue is None:
            return item_id
        row = catalogue.index.get(item_id)
        return (catalogue.titles[row] or item_id) if row is not None else item_id

    parts = sorted({name for item in inspection.page for name in item.breakdown})
    top = (
        max((abs(v) for item in inspection.page for v in item.breakdown.values()), default=1.0)
        or 1.0
    )
    categories = (
        sorted({str(c) for c in catalogue.categories.tolist() if c is not None})
        if catalogue is not None
        else []
    )
    return _page(
        request,
        "user.html",
        {
            "user_id": user_id,
            "inspection": inspection,
            "title": title,
            "parts": parts,
            "scale": top,
            "timeline": timeline.to_dict("records"),
            "shown": shown.to_dict("records"),
            "acted": acted,
            "limit": page_size,
            "category": category or "",
            "tag": tag or "",
            "categories": categories,
            "next_query": urllib.parse.urlencode(
                {
                    k: v
                    for k, v in {
                        "limit": page_size,
                        "category": category or "",
                        "tag": tag or "",
                        "cursor": inspection.next_cursor or "",
                    }.items()
                    if v
                }
            ),
            "quote": lambda v: urllib.parse.quote(v, safe=""),
        },
        principal,
    )


# --- items -----------------------------------------------------------------------------------


@console.get("/ui/items", response_class=HTMLResponse)
def find_item(request: Request, item_id: str | None = None) -> Response:
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    if item_id and item_id.strip():
        return RedirectResponse(f"/ui/items/{urllib.parse.quote(item_id.strip(), safe='')}", 303)
    return _page(request, "find.html", {"kind": "item"}, principal)


@console.get("/ui/items/{item_id:path}", response_class=HTMLResponse)
def item_page(request: Request, item_id: str) -> Response:
    opened = _viewer(request)
    if isinstance(opened, Response):
        return opened
    principal, recommender = opened
    problem = _bad_id(item_id)
    if problem:
        return _error(request, principal, problem, 422)
    with recommender.store.read() as conn:
        stored = load_items(conn, [item_id])
        activity = item_events_per_day(conn, item_id)
    if stored.empty:
        return _error(request, principal, f"No item {item_id!r} in the catalogue.", 404)
    fields = stored.iloc[0].to_dict()
    similar: dict[str, list[Any] | str] = {}
    state = recommender.state
    surfaces: list[tuple[str, str]] = []
    if state is not None:
        for kind in SIMILAR_KINDS:
            try:
                similar[kind] = recommender.similar(item_id, kind, 10)  # type: ignore[arg-type]
            except (UnknownItem, KeyError):
                similar[kind] = "not in the live version"
            except Exception as exc:
                similar[kind] = f"unavailable ({type(exc).__name__})"
        surfaces = _surfaces(state, item_id)
    days = activity.groupby("day")["events"].sum()
    mix = activity.groupby("type")["events"].sum().sort_values(ascending=False)
    title = state.catalogue.titles if state is not None else None
    return _page(
        request,
        "item.html",
        {
            "item_id": item_id,
            "fields": fields,
            "similar": similar,
            "days": _bars((_day(day), value) for day, value in days.items()),
            "mix": _bars(mix.items()),
            "total": int(activity["events"].sum()),
            "surfaces": surfaces,
            "titles": title,
            "catalogue": state.catalogue if state is not None else None,
            "quote": lambda v: urllib.parse.quote(v, safe=""),
        },
        principal,
    )


def _surfaces(state: Any, item_id: str) -> list[tuple[str, str]]:
    """How each candidate source can reach the item in the live version."""
    catalogue = state.catalogue
    row = catalogue.index.get(item_id)
    if row is None:
        return [("live version", "not in it yet (new since training, or unknown)")]
    out: list[tuple[str, str]] = []
    if catalogue.retired[row]:
        out.append(("retired", "yes: never proposed, never similar"))
    for name, rows in sorted(catalogue.model_rows.items()):
        out.append((name, "has a vector" if rows[row] >= 0 else "no vector: no interactions"))
    n = len(catalogue.ids)
    for label, scores in (("popular", catalogue.popularity), ("trending", catalogue.trending)):
        value = float(scores[row])
        rank = int((scores > value).sum()) + 1
        out.append((label, f"rank {rank:,} of {n:,} (score {value:.3g})"))
    return out


# --- experiments -----------------------------------------------------------------------------


@console.get("/ui/experiments", response_class=HTMLResponse)
def experiments_page(request: Request) -> Response:
    opened = _viewer(request)
    if isinstance(opened, Response):
        return opened
    principal, recommender = opened
    settings: Settings = request.app.state.settings
    with recommender.store.read() as conn:
        rows = list_experiments(conn)
    # The newest few in full: a report reads every impression of its experiment.
    reports = [
        experiment_report(recommender.store, settings, str(row["name"]))
        for row in rows[:REPORTED_EXPERIMENTS]
    ]
    return _page(
        request,
        "experiments.html",
        {
            "reports": [r for r in reports if r is not None],
            "older": rows[REPORTED_EXPERIMENTS:],
        },
        principal,
    )


# --- models ----------------------------------------------------------------------------------


@console.get("/ui/models", response_class=HTMLResponse)
def models_page(request: Request, done: str | None = None) -> Response:
    opened = _viewer(request)
    if isinstance(opened, Response):
        return opened
    principal, recommender = opened
    vectors = recommender.vectors
    live = vectors.live_version()
    complete = {v.version: v for v in vectors.list_versions()}
    with recommender.store.read() as conn:
        runs = list_runs(conn, limit=50)
    rows: list[dict[str, Any]] = []
    for run in runs:
        gate = run.metrics.get("gate") or {}
        rows.append(
            {
                "version": run.version,
                "status": run.status,
                "message": run.message,
                "started": run.started_at,
                "finished": run.finished_at,
                "gate": {k: v["ndcg@10"] for k, v in gate.items() if isinstance(v, dict)},
                "ranker": (run.metrics.get("ranker") or {}).get("status"),
                "events": run.data_stats.get("events"),
            }
        )
    recorded = {run.version for run in runs}
    # A kept version whose run is not among the newest recorded (or was copied in).
    for info in complete.values():
        if info.version not in recorded:
            rows.append(
                {
                    "version": info.version,
                    "status": "complete (no run recorded)",
                    "message": None,
                    "started": None,
                    "finished": info.completed_at,
                    "gate": {},
                    "ranker": None,
                    "events": None,
                }
            )
    rows.sort(key=lambda row: str(row["version"]), reverse=True)
    for row in rows:
        row["live"] = row["version"] == live
        row["complete"] = row["version"] in complete
    return _page(
        request,
        "models.html",
        {
            "rows": rows,
            "live": live,
            "serving": recommender.model_version,
            "done": done,
            "quote": lambda v: urllib.parse.quote(v, safe=""),
        },
        principal,
    )


@console.post("/ui/models/{version}/activate")
async def activate(request: Request, version: str) -> Response:
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    form = await _form(request)
    if not _csrf_ok(request, form.get("csrf")):
        return _error(request, principal, "The form expired; reload and retry.", 403)
    if not principal.can("write"):
        return _error(
            request,
            principal,
            "This key has the read scope; activating a version needs write.",
            403,
        )
    recommender = _recommender(request)
    if recommender is None:
        return _error(request, principal, "The service is starting.", 503)
    settings: Settings = request.app.state.settings
    try:
        previous = release.activate(
            recommender.store, recommender.vectors, settings.artifacts_dir, version
        )
    except release.UnknownVersion:
        return _error(request, principal, f"No complete version {version!r}.", 404)
    log.info(
        "model version %s activated from the console by key %s (was %s)",
        version,
        principal.fingerprint,
        previous,
    )
    if recommender.refresh():
        swapped(metrics_of(request))
    return RedirectResponse(f"/ui/models?done={urllib.parse.quote(version, safe='')}", 303)


# --- reports ---------------------------------------------------------------------------------


def _reports(settings: Settings) -> list[dict[str, Any]]:
    root = settings.reports_dir
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir(), reverse=True):
        if path.is_dir() and REPORT_NAME.fullmatch(path.name) and (path / "metrics.json").is_file():
            found.append({"name": path.name, "modified": path.stat().st_mtime})
    return found


def _report_dir(settings: Settings, name: str) -> Path | None:
    if not REPORT_NAME.fullmatch(name):
        return None
    path = settings.reports_dir / name
    return path if (path / "metrics.json").is_file() else None


@console.get("/ui/reports", response_class=HTMLResponse)
def reports_page(request: Request, a: str | None = None, b: str | None = None) -> Response:
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    settings: Settings = request.app.state.settings
    reports = _reports(settings)
    comparison = None
    error = None
    if a and b:
        left, right = _report_dir(settings, a), _report_dir(settings, b)
        if left is None or right is None:
            error = "Choose two reports from the list."
        else:
            try:
                table: pd.DataFrame = compare_reports(left, right, echo=False)
            except (ValueError, KeyError, TypeError, OSError) as exc:
                table = pd.DataFrame()
                error = f"These two reports cannot be compared: {exc}"
            comparison = (
                None
                if error
                else {
                    "columns": [str(c) for c in table.columns],
                    "rows": [
                        [_cell(v) for v in row] for row in table.itertuples(index=False, name=None)
                    ],
                }
            )
    return _page(
        request,
        "reports.html",
        {
            "reports": reports,
            "directory": str(settings.reports_dir),
            "a": a or "",
            "b": b or "",
            "comparison": comparison,
            "error": error,
        },
        principal,
    )


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return "—" if not math.isfinite(float(value)) else f"{float(value):.4f}"
    return "—" if value is None else str(value)


@console.get("/ui/reports/{name}/")
def report_file(request: Request, name: str) -> Response:
    principal = signed_in(request)
    if principal is None:
        return _to_login(request)
    directory = _report_dir(request.app.state.settings, name)
    if directory is None or not (directory / "index.html").is_file():
        return _error(request, principal, f"No report {name!r}.", 404)
    response = FileResponse(directory / "index.html", media_type="text/html")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@console.get("/ui/static/{name}")
def static_file(name: str) -> Response:
    """The console's own CSS and JavaScript (open: they hold no data)."""
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = {"css": "text/css", "js": "text/javascript"}.get(path.suffix.lstrip("."))
    response = FileResponse(path, media_type=media or "application/octet-stream")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
