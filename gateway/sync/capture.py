"""The request-path half of sync: capture a synced write while it streams by, and journal it before the client
gets its answer.

``Mirror.begin`` decides whether a request is a synced write (the route has ``sync:`` and the method is listed),
refuses up front a body larger than ``sync.max_body`` (413: a write the gateway could not journal must not be
answered as if it would reach the other side), and makes sure the write carries an ``Idempotency-Key``: the
client's, else one generated here and sent to the answering side too, so both sides see one key for one write
(services may derive the id of what they create from it; docs/services.md).

``Mirror.commit`` runs after the answering side replied and before the handler returns the response: a 2xx goes
to the journal, and the handler waits for the group commit. A non-2xx, a failed or incomplete exchange is not
mirrored.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.config.model import SyncSpec
from gateway.errors import PayloadTooLarge, Unavailable
from gateway.proxy.headers import Headers
from gateway.stores.api import JournalEntry, SyncJournal

if TYPE_CHECKING:
    from gateway.proxy.forward import Outcome, Tap
    from gateway.routing.table import Route

IDEMPOTENCY_KEY = "Idempotency-Key"   # draft-ietf-httpapi-idempotency-key-header


class SyncWrite:
    """The capture of one synced write (a ``proxy.Tap``): the whole request body (at most ``sync.max_body``, the
    forwarder enforces it) and the answer's status and ``Date``. It passes every call on to the shadow's tap, if
    the request is shadowed too."""

    __slots__ = ("route", "spec", "method", "raw_target", "headers", "key", "shadow", "params", "chunks",
                 "complete", "status", "date")

    def __init__(self, route: Route, spec: SyncSpec, method: str, raw_target: str, headers: Headers, key: str,
                 shadow: Tap | None, params: Mapping[str, str]) -> None:
        self.route = route
        self.params = params        # what the route's path pattern captured: names the entity written
        self.spec = spec
        self.method = method
        self.raw_target = raw_target
        self.headers = headers
        self.key = key
        self.shadow = shadow
        self.chunks: list[bytes] = []
        self.complete = False
        self.status = 0
        self.date: str | None = None

    def limit(self, limit: int | None) -> int:
        return self.spec.max_body if limit is None else min(limit, self.spec.max_body)

    # proxy.Tap
    def request_chunk(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        if self.shadow is not None:
            self.shadow.request_chunk(chunk)

    def request_end(self, complete: bool) -> None:
        self.complete = complete
        if self.shadow is not None:
            self.shadow.request_end(complete)

    def response_start(self, status: int, headers: Headers) -> None:
        self.status = status
        for name, value in headers:
            if name.lower() == "date":
                self.date = value
        if self.shadow is not None:
            self.shadow.response_start(status, headers)

    def response_chunk(self, chunk: bytes) -> None:
        if self.shadow is not None:
            self.shadow.response_chunk(chunk)

    def response_end(self, complete: bool) -> None:
        if self.shadow is not None:
            self.shadow.response_end(complete)


class Mirror:
    """Hands synced writes to the journal. The writes committed in one event-loop iteration go to the journal as
    one batch (one hand-off to its writer thread, one wake-up of the loop when they are durable), which the
    writer may commit together with others. ``committed(route, seq, shadow)`` tells the deliverer a new entry is
    there (and which shadow copy, if any, must go first)."""

    def __init__(self, journal: SyncJournal, committed: Callable[[str, int, Any], None]) -> None:
        self.journal = journal
        self.committed = committed
        self._batch: list[tuple[JournalEntry, asyncio.Future[int]]] = []

    def begin(self, route: Route, request: web.BaseRequest, raw_target: str, headers: Headers,
              shadow: Tap | None, params: Mapping[str, str]) -> SyncWrite | None:
        spec = route.spec.sync if route.spec is not None else None
        if spec is None or route.to is None or request.method not in spec.methods:
            return None
        if not self.journal.available:
            # Refused before either side sees it: a write answered now could not be mirrored (docs/sync.md).
            raise Unavailable(f"synced writes are refused while the sync journal cannot make them durable: "
                              f"{self.journal.problem}")
        if (request.content_length or 0) > spec.max_body:
            raise PayloadTooLarge(f"a synced write's body is kept until the other side has it, up to "
                                  f"{spec.max_body} bytes (sync.max_body); this one is larger")
        key = request.headers.get(IDEMPOTENCY_KEY)
        if not key:
            key = uuid7()
            headers.append((IDEMPOTENCY_KEY, key))
        return SyncWrite(route, spec, request.method, raw_target, headers, key, shadow, params)

    async def commit(self, write: SyncWrite, outcome: Outcome, trace_id: str | None = None) -> None:
        """Journal a completed 2xx write for the other side; returns once it is durable."""
        if outcome.error is not None or outcome.aborted or not write.complete or not 200 <= outcome.status < 300:
            return
        route = write.route
        assert route.to is not None
        by_legacy = outcome.backend == route.legacy.name
        target = route.to if by_legacy else route.legacy
        headers = [(k, v) for k, v in write.headers if k.lower() not in ("date", "content-length")]
        if write.date is not None:
            # The time the answering side made the write: a service that records when something was created
            # takes it from a mirrored write's Date (RFC 9110 §6.6.1), so both sides store the same time.
            headers.append(("Date", write.date))
        entry = JournalEntry(route=route.name, target=target.name, side="extracted" if by_legacy else "legacy",
                             method=write.method, raw_target=write.raw_target, headers=headers,
                             body=b"".join(write.chunks), idem_key=write.key, answered_by=outcome.backend,
                             answered_status=outcome.status, entity=_entity(route, write.params),
                             trace_id=trace_id)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._batch.append((entry, fut))
        if len(self._batch) == 1:
            loop.call_soon(self._flush, loop)
        try:
            seq = await fut
        except Exception as exc:
            raise Unavailable(f"the write was applied by {outcome.backend} but could not be journaled for "
                              f"{target.name}: {exc}", backend=target.name) from exc
        shadow = weakref.ref(write.shadow) if write.shadow is not None else None
        self.committed(route.name, seq, shadow)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._batch = self._batch, []
        done = self.journal.append([entry for entry, _ in batch])
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(_resolve, batch, f))


def _resolve(batch: list[tuple[JournalEntry, asyncio.Future[int]]], done: Any) -> None:
    error = done.exception()
    seqs = done.result() if error is None else [0] * len(batch)
    for (_, fut), seq in zip(batch, seqs, strict=True):
        if fut.done():
            continue   # the request was cancelled (client gone); the entry is journaled all the same
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(seq)


def _entity(route: Route, params: Mapping[str, str]) -> str | None:
    """The entity a write is about, for the surfaces: the sticky path parameter, else the path's first one."""
    spec = route.spec
    if spec is None:
        return None
    sticky = spec.canary.sticky if spec.canary is not None else None
    name = sticky.name if sticky is not None and sticky.kind == "param" else next(iter(params), None)
    return f"{name}={params[name]}" if name is not None and name in params else None


def uuid7() -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48 bits of Unix milliseconds, then 74 random bits. Unique without asking anyone,
    and time-ordered, so the services' tables of keys seen grow at one end of their index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | (rand & (2**62 - 1))
    return str(uuid.UUID(int=value))
