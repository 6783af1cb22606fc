"""Page cursors: an opaque, compact token holding 8-byte hashes of the items already served,
so the next page never repeats one without any state on the server."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable, Sequence

from recsys.serving.types import InvalidCursor

MAX_CURSOR_ITEMS = 1_000
MAX_CURSOR_BYTES = 5 + 8 * MAX_CURSOR_ITEMS
# The page number takes 4 bytes, and the next cursor holds page + 1.
MAX_CURSOR_PAGE = 2**32 - 1
CURSOR_VERSION = 1


def item_hash(item_id: str) -> bytes:
    return hashlib.blake2b(item_id.encode(), digest_size=8).digest()


def encode_cursor(served: Sequence[bytes], page: int) -> str:
    payload = (
        bytes([CURSOR_VERSION]) + page.to_bytes(4, "big") + b"".join(served[-MAX_CURSOR_ITEMS:])
    )
    return base64.urlsafe_b64encode(zlib.compress(payload)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[set[bytes], int]:
    """The served hashes and the page number of a cursor; InvalidCursor if it is not ours."""
    try:
        inflater = zlib.decompressobj()
        # Bounded: a crafted cursor must not inflate into megabytes.
        raw = inflater.decompress(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), MAX_CURSOR_BYTES
        )
    except (ValueError, zlib.error) as exc:
        raise InvalidCursor("cursor is not one this service issued") from exc
    if inflater.unconsumed_tail:
        raise InvalidCursor("cursor is too long")
    if len(raw) < 5 or raw[0] != CURSOR_VERSION or (len(raw) - 5) % 8:
        raise InvalidCursor("cursor is not one this service issued")
    page = int.from_bytes(raw[1:5], "big")
    if page >= MAX_CURSOR_PAGE:
        raise InvalidCursor("cursor is not one this service issued")
    body = raw[5:]
    return {body[i : i + 8] for i in range(0, len(body), 8)}, page


def next_cursor(served: set[bytes], item_ids: Iterable[str], page: int) -> str | None:
    """None when the feed has no more to give: this page was empty, or the session has
    served as many items as a cursor remembers (past that, pages would repeat)."""
    new = [item_hash(i) for i in item_ids]
    if not new or len(served) + len(new) >= MAX_CURSOR_ITEMS:
        return None
    return encode_cursor([*served, *new], page + 1)
