"""Writes the gateway mirrors (``sync:`` in routes.yaml): how the shop applies a write that the extracted side
answered first, so that both databases end up with the same rows (docs/services.md, "Mirrored writes").

- ``Idempotency-Key``: ``Database.write`` records the key with the first result, in the write's transaction; the
  same key again changes nothing and gets that first result.
- ``X-Strangler-Sync: 1`` marks a mirrored write: a real write (unlike ``X-Shadow``), applied as usual. The shop
  never forwards a write anywhere, so it cannot mirror it again.
- A mirrored write's ``Date`` is when the other side made it; the shop stores that time rather than its own.
- The id of a created review comes from the key, so the same review has the same id on both sides.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from legacy_app.db import TIMESTAMP_FORMAT, format_timestamp

SHADOW_HEADER = "X-Shadow"
SYNC_HEADER = "X-Strangler-Sync"
IDEMPOTENCY_KEY = "Idempotency-Key"
WRITTEN_AT = "strangler.written_at"   # the request's key for the time its write recorded


def is_shadow(request: web.Request) -> bool:
    """The gateway marks shadow copies with ``X-Shadow: 1``; those must not change any data."""
    return request.headers.get(SHADOW_HEADER) == "1"


def write_options(request: web.Request) -> dict[str, Any]:
    """How ``Database.write`` applies this request's change: a shadow copy as a dry run; with the request's
    ``Idempotency-Key``, so a repeated key changes nothing and answers as the first time."""
    return {"dry_run": is_shadow(request), "key": request.headers.get(IDEMPOTENCY_KEY) or None}


def is_mirrored(request: web.Request) -> bool:
    """A write the gateway mirrored from the extracted side (``X-Strangler-Sync: 1``): applied like any other,
    and never sent on (the shop calls no one)."""
    return request.headers.get(SYNC_HEADER) == "1"


def written_at(request: web.Request) -> str:
    """When the write happened: for a mirrored write, the time the other side made it (the gateway sends it as
    ``Date``, RFC 9110 §6.6.1), so both sides store the same time; otherwise now."""
    date = request.headers.get("Date") if is_mirrored(request) else None
    value = None
    if date:
        try:
            value = format_timestamp(email.utils.parsedate_to_datetime(date))
        except (TypeError, ValueError):
            pass
    request[WRITTEN_AT] = value = value or format_timestamp(datetime.now(UTC))
    return value


def stamp_write_date(request: web.Request, response: web.StreamResponse) -> None:
    """A write's answer is dated with the time the write recorded (not the moment the answer left, which can be
    the next second): the gateway passes that ``Date`` on with the mirrored write, so the other side stores the
    same time."""
    value = request.get(WRITTEN_AT)
    if value is not None:
        moment = datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        response.headers["Date"] = email.utils.format_datetime(moment, usegmt=True)


def entity_id(request: web.Request) -> int | None:
    """The id of what this write creates, derived from its ``Idempotency-Key`` so that every side applying the
    write gives it the same id (docs/services.md); None without a key (SQLite allocates). The key is hashed into
    [2^52, 2^53): exact in JavaScript and far above any row number."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if not key:
        return None
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (1 << 52) + int.from_bytes(digest, "big") % (1 << 52)
