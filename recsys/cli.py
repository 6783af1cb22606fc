"""The ``recsys`` command line: an entry point that composes the library and the pipelines.

Like ``recsys.api``, this module sits above the library: nothing in ``recsys`` imports it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from pydantic import ValidationError

from recsys.config import get_settings
from recsys.store import open_store

if TYPE_CHECKING:
    from recsys.serving import Recommender

# Tracebacks never print local variables: they may hold API keys or database passwords.
app = typer.Typer(
    help="Personalized feeds from interaction logs.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Manage the relational store.", no_args_is_help=True)
import_app = typer.Typer(help="Import items, events and public datasets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
models_app = typer.Typer(help="List published model versions and roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")
users_app = typer.Typer(help="Erase a user's data.", no_args_is_help=True)
app.add_typer(users_app, name="users")
items_app = typer.Typer(help="Take items out of circulation.", no_args_is_help=True)
app.add_typer(items_app, name="items")
experiments_app = typer.Typer(
    help="Start, stop and report A/B experiments (one runs at a time).", no_args_is_help=True
)
app.add_typer(experiments_app, name="experiments")

log = logging.getLogger("recsys")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "httpx", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        get_settings()
    except ValidationError as exc:
        # A bad RECSYS_* variable: say which and why, once, instead of a traceback.
        problems = "; ".join(
            f"RECSYS_{'__'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise _fail(f"invalid configuration: {problems}") from None


# --- db ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the store to REVISION (default: the latest)."""
    store = open_store()
    store.upgrade(revision)
    typer.echo(f"store at {store.engine.url.render_as_string(hide_password=True)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Migrate the store down to REVISION ('base' removes every table)."""
    open_store().downgrade(revision)
    typer.echo(f"downgraded to {revision}")


# --- import -----------------------------------------------------------------------------


def _print_summary(summary: object) -> None:
    from pipelines.ingest import ImportSummary

    assert isinstance(summary, ImportSummary)
    data = summary.as_dict()
    typer.echo(
        f"{summary.kind}: inserted={summary.inserted} updated={summary.updated} "
        f"duplicates={summary.duplicates} rejected={summary.rejected} "
        f"({summary.rows} rows in {summary.seconds:.1f}s)"
    )
    for sample in summary.reject_samples[:10]:
        typer.echo(f"  rejected line {sample['row']}: {sample['reason']}", err=True)
    if summary.rejects_path:
        typer.echo(f"  rejected rows written to {summary.rejects_path}", err=True)
    log.debug("import summary %s", json.dumps(data))


def _import(
    kind: Literal["items", "events"], path: Path, strict: bool, rejects: Path | None
) -> None:
    from pipelines.ingest import ImportError_, import_file

    settings = get_settings()
    try:
        summary = import_file(
            open_store(settings),
            settings,
            kind,
            path,
            strict=strict,
            rejects_path=rejects,
        )
    except ImportError_ as exc:
        raise _fail(str(exc)) from exc
    _print_summary(summary)
    if summary.strict_failed:
        raise _fail("strict import failed; nothing from the file was stored")
    if summary.accepted == 0:
        raise _fail("no row was accepted")


StrictOption = Annotated[
    bool, typer.Option("--strict", help="Reject the whole file if any row is bad.")
]
RejectsOption = Annotated[
    Path | None, typer.Option("--rejects", help="Where to write rejected rows (CSV).")
]


@import_app.command("items")
def import_items(path: Path, strict: StrictOption = False, rejects: RejectsOption = None) -> None:
    """Import catalogue items from CSV, JSON Lines or Parquet (upsert by item_id)."""
    _import("items", path, strict, rejects)


@import_app.command("events")
def import_events(path: Path, strict: StrictOption = False, rejects: RejectsOption = None) -> None:
    """Import events from CSV, JSON Lines or Parquet (idempotent by event_id)."""
    _import("events", path, strict, rejects)


def _import_dataset(reader_name: str, directory: Path) -> None:
    import pipelines.datasets as datasets
    from pipelines.ingest import import_frames

    settings = get_settings()
    reader = getattr(datasets, reader_name)
    try:
        items, events = reader(directory)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    item_summary, event_summary = import_frames(open_store(settings), settings, items, events)
    _print_summary(item_summary)
    _print_summary(event_summary)
    if event_summary.accepted == 0:
        raise _fail("no event was accepted")


@import_app.command("movielens")
def import_movielens(directory: Path) -> None:
    """Import a MovieLens download (ml-latest-small or ml-100k layout)."""
    _import_dataset("read_movielens", directory)


@import_app.command("lastfm")
def import_lastfm(directory: Path) -> None:
    """Import the HetRec 2011 Last.fm dataset (hetrec2011-lastfm-2k)."""
    _import_dataset("read_lastfm", directory)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Same seed, same world.")] = 42,
    scale: Annotated[
        float, typer.Option(help="1.0 is ~2k items, 1k users, 100k events; 100 is 10M events.")
    ] = 1.0,
) -> None:
    """Generate a synthetic but believable world and import it into the store."""
    from pipelines.demo_world import generate_world
    from pipelines.ingest import import_frames

    if scale <= 0:
        raise _fail("--scale must be positive")
    settings = get_settings()
    world = generate_world(seed=seed, scale=scale)
    typer.echo(f"demo world: {world.n_items} items, {world.n_users} users (seed {seed})")
    item_summary, event_summary = import_frames(
        open_store(settings), settings, world.items, world.iter_events()
    )
    _print_summary(item_summary)
    _print_summary(event_summary)


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="The service's base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="RECSYS_SIMULATE_API_KEY", help="A write key, if keys are set."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The demo world's seed (as given to `demo`).")] = 42,
    scale: Annotated[
        float, typer.Option(help="The demo world's scale (as given to `demo`).")
    ] = 1.0,
    users: Annotated[int, typer.Option(min=1, help="How many of its users read feeds.")] = 100,
    pages: Annotated[int, typer.Option(min=1, help="Feed pages each user reads.")] = 3,
    page_size: Annotated[int, typer.Option(min=1, max=100)] = 10,
) -> None:
    """Simulated users of the demo world read their feeds over HTTP and react by their
    planted tastes, sending each event back with its page's feed_id (for experiments)."""
    from pipelines.demo_world import generate_world
    from pipelines.simulate import FeedClient, ServiceError
    from pipelines.simulate import simulate as run_simulation

    if scale <= 0:
        raise _fail("--scale must be positive")
    world = generate_world(seed=seed, scale=scale)
    chosen = world.users["user_id"].head(users).tolist()
    try:
        result = run_simulation(
            FeedClient(url, api_key=api_key),
            world,
            chosen,
            pages_per_user=pages,
            page_size=page_size,
            seed=seed,
        )
    except ServiceError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot reach the service at {url}: {exc}") from exc
    typer.echo(
        f"{len(chosen)} users read {result.pages:,} pages: {result.impressions:,} items shown, "
        f"{result.events:,} events sent ({result.likes:,} likes)"
    )
    for variant, count in sorted(result.variants.items(), key=lambda kv: str(kv[0])):
        typer.echo(f"  variant {variant or '(none)'}: {count:,} pages")


@app.command("train")
def train_command(
    force: Annotated[
        bool, typer.Option("--force", help="Publish even if the quality gate refuses.")
    ] = False,
) -> None:
    """The nightly job: train ALS, hybrid and content embeddings and publish them."""
    from pipelines.train import GateRefused, TrainingError, train

    settings = get_settings()
    store = open_store(settings)
    try:
        result = train(store, settings, force=force)
    except TrainingError as exc:
        raise _fail(str(exc)) from exc
    except GateRefused as exc:
        raise _fail(
            f"not published: {exc} (the live model is unchanged; --force overrides)"
        ) from exc
    stats = result.data_stats
    rows = [
        ("version", result.version),
        ("published", "yes" if result.published else "no"),
        ("events", f"{stats.get('events', 0):,}"),
        ("users", f"{stats.get('users', 0):,}"),
        ("items", f"{stats.get('items', 0):,}"),
        ("ignored impressions", f"{stats.get('ignored_impressions', 0):,}"),
        ("pruned impressions", f"{stats.get('pruned_impressions', 0):,}"),
    ]
    gate = result.metrics.get("gate", {})
    if "skipped" in gate:
        rows.append(("gate", f"skipped: {gate['skipped']}"))
    else:
        for name, values in gate.items():
            rows.append((f"gate {name} ndcg@10", f"{values['ndcg@10']:.4f}"))
    rows += [(f"time {name}", f"{seconds:.1f}s") for name, seconds in result.timings.items()]
    rows.append(("time total", f"{sum(result.timings.values()):.1f}s"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name.ljust(width)}  {value}")


@models_app.command("list")
def models_list() -> None:
    """Training runs, newest first, and which version is live."""
    from recsys import registry
    from recsys.store.runs import list_runs
    from recsys.vectors import open_vector_store

    settings = get_settings()
    with open_vector_store(settings) as vectors:
        live = vectors.live_version()
        available = {v.version for v in vectors.list_versions()}
    with open_store(settings).read() as conn:
        runs = list_runs(conn)
    if not runs:
        typer.echo("no training runs yet; run `recsys train`")
        return
    gated = registry.gated().name
    for run in runs:
        marker = "*" if run.version == live else " "
        ndcg = run.metrics.get("gate", {}).get(gated, {}).get("ndcg@10")
        quality = f"ndcg@10={ndcg:.4f}" if ndcg is not None else ""
        vectors_state = "vectors" if run.version in available else ""
        typer.echo(
            f"{marker} {run.version}  {run.status:<9}  {quality:<16} {vectors_state:<7} "
            f"{ranks_with(run.metrics, settings.feed.ranker):<14} {run.message or ''}".rstrip()
        )


def ranks_with(metrics: dict[str, Any], mode: str) -> str:
    """Which ranker a version serves with: the learned one when it passed its gate and
    ``RECSYS_FEED__RANKER=auto``, else the blend."""
    ranker = metrics.get("ranker") or {}
    if ranker.get("status") == "published" and mode == "auto":
        return "ranker=learned"
    return "ranker=blend" if ranker else ""


@models_app.command("rollback")
def models_rollback(version: str) -> None:
    """Make an earlier complete VERSION live again."""
    from recsys import release
    from recsys.vectors import open_vector_store

    settings = get_settings()
    with open_vector_store(settings) as vectors:
        try:
            release.activate(open_store(settings), vectors, settings.artifacts_dir, version)
        except release.UnknownVersion as exc:
            raise _fail(str(exc)) from exc
    typer.echo(f"live version is now {version}")


@users_app.command("forget")
def users_forget(user_id: str) -> None:
    """Erase USER_ID's events and profile from the store and their vector from every kept
    model version. With a service running on the embedded index, call its
    DELETE /v1/users/{user_id} instead: the service holds the index open."""
    from recsys.forget import forget_user
    from recsys.vectors import open_vector_store

    settings = get_settings()
    with open_vector_store(settings) as vectors:
        try:
            forgotten = forget_user(open_store(settings), vectors, user_id)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        except RuntimeError as exc:
            raise _fail(
                f"{exc}; nothing was erased (with a service running on the embedded index, "
                "use its DELETE /v1/users/{user_id})"
            ) from exc
    versions = ", ".join(forgotten.vector_versions) or "none"
    typer.echo(
        f"forgot {user_id}: {forgotten.events} events, "
        f"profile {'removed' if forgotten.profile else 'absent'}, vectors in versions: {versions}"
    )


@items_app.command("retire")
def items_retire(item_ids: list[str]) -> None:
    """Take ITEM_IDS out of every feed and similar-items list, and out of the next version.
    With a service running on the embedded index, call its DELETE /v1/items/{item_id}
    instead: the service holds the index."""
    from recsys.serving import UnknownItem

    wanted = list(dict.fromkeys(item_ids))
    recommender = _open_recommender()
    try:
        retired = recommender.retire_items(wanted)
    except UnknownItem as exc:
        raise _fail(f"unknown item {exc.args[0]!r}; nothing was retired") from exc
    finally:
        recommender.close()
    typer.echo(f"retired {retired} item(s); {len(wanted) - retired} were retired already")


@experiments_app.command("start")
def experiments_start(
    name: str,
    variants: Annotated[
        str,
        typer.Option(
            help='The variants as JSON, e.g. \'[{"name": "a", "share": 0.5}, '
            '{"name": "b", "share": 0.5, "ranker": "popularity"}]\'.'
        ),
    ],
) -> None:
    """Start experiment NAME; running services follow within a second."""
    from recsys.experiments import ExperimentConflict, InvalidExperiment, start_experiment
    from recsys.vectors import open_vector_store

    settings = get_settings()
    try:
        parsed = json.loads(variants)
    except json.JSONDecodeError as exc:
        raise _fail(f"--variants is not JSON: {exc}") from exc
    with open_vector_store(settings) as vectors:
        try:
            experiment = start_experiment(open_store(settings), settings, vectors, name, parsed)
        except (InvalidExperiment, ExperimentConflict) as exc:
            raise _fail(str(exc)) from exc
    shares = ", ".join(f"{v.name} {v.share:g}" for v in experiment.variants)
    typer.echo(f"experiment {experiment.name} running: {shares}")


@experiments_app.command("stop")
def experiments_stop(name: str) -> None:
    """Stop experiment NAME; its report stays."""
    from recsys.experiments import stop

    stopped = stop(open_store(get_settings()), name)
    if stopped is None:
        raise _fail(f"no experiment named {name!r}")
    typer.echo(f"experiment {name} " + ("stopped" if stopped else "had stopped already"))


@experiments_app.command("list")
def experiments_list() -> None:
    """Every experiment, newest first."""
    from recsys.experiments import list_experiments

    with open_store(get_settings()).read() as conn:
        rows = list_experiments(conn)
    if not rows:
        typer.echo("no experiments yet")
    for row in rows:
        names = ", ".join(f"{v['name']} {v['share']:g}" for v in row["variants"])
        typer.echo(f"{row['name']:<24} {row['status']:<8} {names}")


@experiments_app.command("report")
def experiments_report(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """What each variant's users did with what they were shown (GET /v1/experiments/NAME)."""
    from recsys.experiments import experiment_report

    settings = get_settings()
    report = experiment_report(open_store(settings), settings, name)
    if report is None:
        raise _fail(f"no experiment named {name!r}")
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"experiment {report['name']} ({report['status']})")
    typer.echo(
        f"{'variant':<16} {'users':>7} {'impressions':>11} {'actions':>8} "
        f"{'action rate':>11}  {'95% interval':<17} {'skip rate':>9} {'dwell/imp':>9}"
    )
    for v in report["variants"]:
        interval = v["action_rate_ci"]
        shown = f"{interval[0]:.4f}-{interval[1]:.4f}" if interval else "-"
        typer.echo(
            f"{v['name']:<16} {v['users']:>7} {v['impressions']:>11} {v['actions']:>8} "
            f"{_fmt(v['action_rate']):>11}  {shown:<17} {_fmt(v['skip_rate']):>9} "
            f"{_fmt(v['dwell_per_impression'], 1):>9}"
        )
    p_value = report["p_value"]
    typer.echo(f"p-value (action rate): {_fmt(p_value) if p_value is not None else '-'}")


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _open_recommender() -> Recommender:
    from recsys.serving import Recommender

    settings = get_settings()
    # An operator's look is not an answer shown to the user: no impressions.
    recommender = Recommender.open(open_store(settings), settings, record_impressions=False)
    if recommender.model_version is None:
        error = recommender.live.index_error
        recommender.close()
        if error:
            # Published, but not openable here: an embedded index opens in one process.
            raise _fail(
                f"the live model version could not be opened ({error}); with a service "
                "running on the embedded index, use its HTTP API"
            )
        raise _fail("no model has been published yet: run `recsys train`")
    return recommender


def _print_items(items: list[Any], as_json: bool, payload: dict[str, Any]) -> None:
    from dataclasses import asdict

    if as_json:
        payload["items"] = [asdict(item) for item in items]
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    for rank, item in enumerate(items, start=1):
        typer.echo(f"{rank:>3}. {item.item_id:<24} {item.score:7.3f}  {item.reason}")


@app.command()
def feed(
    user_id: str,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    category: Annotated[list[str] | None, typer.Option(help="Only these categories.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON.")] = False,
) -> None:
    """One page of USER_ID's feed, with the reason for each pick."""
    from recsys.serving import FeedFilters, InvalidCursor

    recommender = _open_recommender()
    try:
        page = recommender.feed(
            user_id, limit=limit, cursor=cursor, filters=FeedFilters(categories=category or None)
        )
    except InvalidCursor as exc:
        raise _fail(str(exc)) from exc
    finally:
        recommender.close()
    _print_items(
        page.items,
        as_json,
        {
            "user_id": page.user_id,
            "model_version": page.model_version,
            "next_cursor": page.next_cursor,
            "degraded": page.degraded,
        },
    )


@app.command()
def similar(
    item_id: str,
    kind: Annotated[str, typer.Option(help="content, behavioural, blend or item2item")] = "content",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Items similar to ITEM_ID."""
    from recsys.serving import UnknownItem

    recommender = _open_recommender()
    try:
        items = recommender.similar(item_id, kind=kind, limit=limit)  # type: ignore[arg-type]
    except UnknownItem as exc:
        raise _fail(f"unknown item {item_id!r}") from exc
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    finally:
        recommender.close()
    _print_items(items, as_json, {"item_id": item_id, "model_version": recommender.model_version})


@app.command()
def evaluate(
    dataset: Annotated[
        str,
        typer.Option(
            help="store (the store's own data), movielens, lastfm, or demo (the demo world "
            "of --seed and --scale, generated in memory)"
        ),
    ] = "store",
    path: Annotated[
        Path | None, typer.Option(help="Dataset directory for movielens/lastfm.")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="temporal, stratified, cold_items, or planted (--dataset demo: every event "
            "trains; scored on the likes the world planted and its events do not show)"
        ),
    ] = "temporal",
    k: Annotated[list[int] | None, typer.Option("--k", help="Cut-offs (repeatable).")] = None,
    tune: Annotated[
        bool, typer.Option("--tune", help="Grid-search ALS on a validation split first.")
    ] = False,
    feed_model: Annotated[
        bool, typer.Option("--feed/--no-feed", help="Include the production blended feed.")
    ] = True,
    validation: Annotated[
        bool,
        typer.Option(
            "--validation",
            help="Score on a validation split carved out of the protocol's train part "
            "(the same protocol again), never its test part: for choosing settings.",
        ),
    ] = False,
    seed: int = 42,
    scale: Annotated[
        float, typer.Option(help="The demo world's size with --dataset demo (1: 100k events).")
    ] = 1.0,
    out: Annotated[
        Path | None,
        typer.Option(help="Reports directory (default: RECSYS_REPORTS_DIR, ./reports)."),
    ] = None,
    compare: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Diff two reports (directories or metrics.json) instead."),
    ] = None,
) -> None:
    """Offline evaluation report comparing popularity, ALS, hybrid, content and the feed."""
    if compare:
        from recsys.evaluation.report import compare_reports

        try:
            compare_reports(*(p / "metrics.json" if p.is_dir() else p for p in compare))
        except (FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from exc
        return
    import pipelines.datasets as datasets
    from pipelines.evaluate import PROTOCOLS, load_store_data, prepare
    from pipelines.evaluate import evaluate as run_evaluation

    if protocol not in PROTOCOLS:
        raise _fail(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "planted" and (validation or tune):
        raise _fail(
            "--protocol planted trains on every event: there is no train part to carve a "
            "validation split from (drop --validation and --tune)"
        )
    settings = get_settings()
    planted = None
    if dataset == "store":
        items, events = load_store_data(settings)
        name = "store"
        if events.empty:
            raise _fail("the store has no events; import some or run `recsys demo`")
    elif dataset in ("movielens", "lastfm"):
        if path is None:
            raise _fail(f"--path DIR is required for {dataset}")
        try:
            items, events = getattr(datasets, f"read_{dataset}")(path)
        except FileNotFoundError as exc:
            raise _fail(str(exc)) from exc
        name = path.name
    elif dataset == "demo":
        from pipelines.demo_world import generate_world

        if not scale > 0:
            raise _fail("--scale must be positive")
        world = generate_world(seed=seed, scale=scale)
        items, events = world.items, world.events()
        name = f"demo-seed{seed}-scale{scale:g}"
        if protocol == "planted":
            planted = world.hidden_likes(events, seed)
    else:
        raise _fail("--dataset must be store, movielens, lastfm or demo")
    if protocol == "planted" and planted is None:
        raise _fail("--protocol planted needs a world with planted tastes: use --dataset demo")
    if protocol == "temporal" and events["timestamp"].nunique() <= 1:
        # Last.fm's play counts carry no time: a "temporal" holdout would be file order.
        raise _fail(
            f"every event of {name} has the same timestamp, so a temporal split would only "
            "follow file order; use --protocol stratified"
        )
    data = prepare(name, items, events, settings)
    data.planted = planted
    result = run_evaluation(
        data,
        settings,
        protocol=protocol,
        k_values=k or [5, 10, 20],
        seed=seed,
        tune=tune,
        validation=validation,
        include_feed=feed_model,
        out_dir=out or settings.reports_dir,
        progress=typer.echo,
    )
    typer.echo(f"report: {result.report_dir / 'index.html'}")
    for name, model in result.document.get("models", {}).items():
        metrics = model.get("metrics", {})
        line = "  ".join(
            f"{metric}={metrics[metric]:.4f}"
            for metric in ("ndcg@10", "precision@10", "recall@10", "coverage@10")
            if metrics.get(metric) is not None
        )
        cold = model.get("cold_start", {}).get("metrics", {})
        if cold.get("auc") is not None:
            line += f"  cold_auc={cold['auc']:.4f}"
        typer.echo(f"  {name:<10} {line}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address; loopback unless you set API keys.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="Serving processes on the port; 0 = one per core. Default: setting."
        ),
    ] = None,
) -> None:
    """Run the HTTP service (feed, similar items, events, items, health, metrics) on one
    process per core, or as many as --workers says."""
    from recsys.api.server import InsecureBindError, check_bind, worker_count
    from recsys.api.server import serve as run_server

    settings = get_settings()
    count = worker_count(workers, settings)
    try:
        check_bind(host, settings)
        typer.echo(
            f"recsys: serving on http://{host}:{port} with {count} worker{'s' * (count > 1)}; "
            f"API reference at http://{host}:{port}/docs; web console at http://{host}:{port}/ui"
        )
        run_server(host=host, port=port, settings=settings, workers=count)
    except InsecureBindError as exc:
        raise _fail(str(exc)) from exc


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # python -m recsys.cli
    main()
