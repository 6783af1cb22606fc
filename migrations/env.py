"""Alembic environment: the URL comes from the caller's config or from recsys Settings."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import context
from sqlalchemy import Connection, Engine

from recsys.config import get_settings
from recsys.store.engine import make_engine, sqlite_database_file
from recsys.store.schema import metadata

# Any fixed 64-bit number: the advisory lock that serialises migrations on PostgreSQL.
MIGRATION_LOCK_KEY = 0x7265637379730001

config = context.config
target_metadata = metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        # The store's own connection (an in-memory SQLite store), in the caller's transaction.
        _migrate_on(given)
        return
    # No pool: a migration must not leave connections behind in the caller's process.
    engine = make_engine(_url(), pooled=False)
    with _sqlite_file_lock(engine.url.database if engine.dialect.name == "sqlite" else None):
        _migrate(engine)
    engine.dispose()


def _migrate(engine: Engine) -> None:
    with engine.connect() as connection:
        _migrate_on(connection)


def _migrate_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; see _sqlite_file_lock for why.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


@contextmanager
def _sqlite_file_lock(database: str | None) -> Iterator[None]:
    """One process at a time migrates: two services starting on a fresh database would
    otherwise both create the tables, and the second fail. Alembic reads the current
    revision after the lock is taken, so the second process finds the work done.

    SQLite runs DDL outside a transaction, so its own locks cannot do this: a lock file
    beside the database does.
    """
    file = sqlite_database_file(database)
    if file is None:
        yield
        return
    with open(f"{file}.migrate.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
