"""The ``recsys`` command line: an entry point that composes the library and the pipelines.

Like ``recsys.api``, this module sits above the library: nothing in ``recsys`` imports it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from recsys.config import get_settings
from recsys.store import open_store

app = typer.Typer(help="Personalized feeds from interaction logs.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the relational store.", no_args_is_help=True)
import_app = typer.Typer(help="Import items, events and public datasets.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")

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


def main() -> None:  # pragma: no cover - console entry
    app()
