"""Page cursors: an opaque, compact token holding 8-byte hashes of the items already served,
so the next page never repeats one without any state on the server.

A cursor is bound to the request it continues: the user and the filters. Used for another
user or other filters, it is refused rather than silently applied to a different feed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence

from recsys.serving.types import FeedFilters, InvalidCursor

MAX_CURSOR_ITEMS = 1_000
# Version 1: [1][page: 4 bytes][hashes]. Version 2 adds the request it belongs to:
# [2][page: 4 bytes][request: 8 bytes][hashes].
CURSOR_VERSION = 2
UNBOUND_VERSION = 1
HEADER_BYTES = {UNBOUND_VERSION: 5, CURSOR_VERSION: 13}
MAX_CURSOR_BYTES = HEADER_BYTES[CURSOR_VERSION] + 8 * MAX_CURSOR_ITEMS
# The page number takes 4 bytes, and the next cursor holds page + 1.
MAX_CURSOR_PAGE = 2**32 - 1
NOT_OURS = "cursor is not one this service issued"


def item_hash(item_id: str) -> bytes:
    return hashlib.blake2b(item_id.encode(), digest_size=8).digest()


def request_key(user_id: str, filters: FeedFilters | None) -> bytes:
    """8 bytes naming a feed request: its user and filters (order and repeats ignored)."""
    parts = [user_id]
    for values in (
        (filters.categories, filters.tags, filters.exclude_ids) if filters else (None,) * 3
    ):
        parts.append(json.dumps(sorted(set(values or []))))
    # JSON strings cannot contain a raw newline, so the parts cannot run into each other.
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).digest()


def encode_cursor(served: Sequence[bytes], page: int, request: bytes) -> str:
    payload = (
        bytes([CURSOR_VERSION])
        + page.to_bytes(4, "big")
        + request
        + b"".join(served[-MAX_CURSOR_ITEMS:])
    )
    return base64.urlsafe_b64encode(zlib.compress(payload)).decode().rstrip("=")


def decode_cursor(cursor: str, request: bytes) -> tuple[set[bytes], int]:
    """The served hashes and the page number of a cursor issued for ``request``;
    InvalidCursor if it is not ours, or continues another user's feed or other filters."""
    try:
        inflater = zlib.decompressobj()
        # Bounded: a crafted cursor must not inflate into megabytes.
        raw = inflater.decompress(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), MAX_CURSOR_BYTES
        )
    except (ValueError, zlib.error) as exc:
        raise InvalidCursor(NOT_OURS) from exc
    if inflater.unconsumed_tail:
        raise InvalidCursor("cursor is too long")
    header = HEADER_BYTES.get(raw[0]) if raw else None
    if header is None or len(raw) < header or (len(raw) - header) % 8:
        raise InvalidCursor(NOT_OURS)
    page = int.from_bytes(raw[1:5], "big")
    if page >= MAX_CURSOR_PAGE:
        raise InvalidCursor(NOT_OURS)
    # Version 1 cursors, issued before cursors were bound, continue as they did.
    if raw[0] == CURSOR_VERSION and raw[5:13] != request:
        raise InvalidCursor(
            "this cursor continues another feed: use it with the same user and filters"
        )
    body = raw[header:]
    return {body[i : i + 8] for i in range(0, len(body), 8)}, page


def next_cursor(
    served: set[bytes], item_ids: Iterable[str], page: int, request: bytes
) -> str | None:
    """None when the feed has no more to give: this page was empty, or the session has
    served as many items as a cursor remembers (past that, pages would repeat)."""
    new = [item_hash(i) for i in item_ids]
    if not new or len(served) + len(new) >= MAX_CURSOR_ITEMS:
        return None
    return encode_cursor([*served, *new], page + 1, request)
