"""The relational event store: schema, engine, and bulk reads/writes of events and items."""

from recsys.store.engine import Store, open_store

__all__ = ["Store", "open_store"]
