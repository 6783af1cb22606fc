"""Erasing a user: their events and profile from the store, their vectors from every kept
version of the index, so neither serving nor the next training sees them again."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys.store import Store
from recsys.store.events import forget_user as forget_stored_user
from recsys.vectors.versions import VectorStore


@dataclass
class Forgotten:
    """What was erased for one user."""

    user_id: str
    events: int = 0
    profile: bool = False
    # The model versions whose index held a vector of the user.
    vector_versions: list[str] = field(default_factory=list)


def forget_user(store: Store, vectors: VectorStore, user_id: str) -> Forgotten:
    """Erase ``user_id`` everywhere; safe to repeat (a second call finds nothing).

    The vectors go first: a user whose events are gone but whose stored vector is not
    would still get a feed made from the erased history. An error on the way leaves the
    events in place for a retry to finish the job.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    forgotten = Forgotten(user_id=user_id)
    for info in vectors.list_versions():
        # Within a process every reader of a version shares its open index, so this is the
        # serving state's own index for the live version.
        index = vectors.open_version(info.version)
        try:
            if any(index.get_user_vector(user_id, name) is not None for name in index.dims):
                index.delete_users([user_id])
                forgotten.vector_versions.append(info.version)
        finally:
            index.close()
    with store.transaction() as conn:
        forgotten.events, forgotten.profile = forget_stored_user(conn, user_id)
    return forgotten
