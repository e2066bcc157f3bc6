"""The delivery worker: sends journaled writes to the other side, at least once, in order per route.

One task per route with pending entries takes them in ``seq`` order and sends each as a real write marked
``X-Strangler-Sync: 1`` with the entry's ``Idempotency-Key`` (the same on every attempt, so a write that reached
the other side before a timeout or a crash is not applied twice). The head of a route's queue blocks the rest:
the order the answering side saw is the order the other side gets.

    2xx                          delivered (its body is dropped from the journal)
    4xx (but 408, 425, 429)      dead letter: kept, shown, ``strangler sync retry ROUTE`` sends it again
    anything else, no answer     retried with exponential backoff (``BACKOFF_FIRST`` doubling to ``BACKOFF_MAX``)

A rollback changes nothing here: pending writes keep going to the side they were meant for. Only one process
delivers (the primary worker); the others only append. On a shared store every instance's primary runs this loop
and the journal hands a route's entries to one of them at a time (``stores.postgres.journal``). After a crash, a
restart (or, in a fleet, another instance) finds the pending entries in the journal and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from typing import Any

from gateway.config.model import Backend
from gateway.errors import GatewayError
from gateway.proxy import upstream
from gateway.proxy.headers import SYNC_HEADER
from gateway.proxy.upstream import Upstreams
from gateway.routing.table import TableRef
from gateway.stores.api import SyncJournal
from gateway.sync.verify import Verifier

log = logging.getLogger("strangler.sync")

POLL = 0.5              # seconds between looks at the journal for entries other processes appended
BATCH = 200             # entries read from the journal at a time per route
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0       # short: a side that comes back is caught up within seconds
SHADOW_WAIT = 10.0      # at most this long for a shadow's dry-run copy of the same write to go first
RETRY_4XX = frozenset({408, 425, 429})
DROPPED_HEADERS = frozenset({"content-length", "traceparent", "tracestate", "transfer-encoding"})
SUMMARY_EVERY = 1.0     # seconds between two reads of the journal's per-route counts (for /metrics)
LAGS = 2048             # recent delivery lags kept for the percentiles


class Deliverer:
    def __init__(self, journal: SyncJournal, tables: TableRef, upstreams: Upstreams,
                 verifier: Verifier | None = None) -> None:
        self.journal = journal
        self.tables = tables
        self.upstreams = upstreams    # mirrored writes use their own keep-alive pool per backend ("sync")
        self.verifier = verifier
        self._wake = asyncio.Event()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._generation: dict[str, int] = {}
        self._shadows: dict[int, weakref.ref[Any]] = {}
        self._marks: list[tuple[int, int]] = []       # delivered, not yet marked in the journal
        self.delivered = 0
        self.dead = 0
        self.retries = 0
        self.lags: deque[float] = deque(maxlen=LAGS)   # seconds from the answer to the other side's 2xx
        self.summary: dict[str, dict[str, Any]] = {}    # the journal's per-route counts, refreshed each second
        self._summarised = 0.0

    # -- told by the request path -------------------------------------------------------------------------------

    def committed(self, route: str, seq: int, shadow: weakref.ref[Any] | None) -> None:
        if shadow is not None:
            self._shadows[seq] = shadow
        self._generation[route] = self._generation.get(route, 0) + 1
        if route not in self._active:   # a running drain of the route sees the new generation by itself
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        paused = False
        try:
            while True:
                try:
                    await self._tick()
                    paused = False
                except ConnectionError as exc:   # a shared journal's store is away: said once, not every tick
                    if not paused:
                        log.warning("sync: delivery paused: %s", exc, extra={"event": "sync_paused"})
                    paused = True
                except Exception:  # a journal hiccup must not stop delivery for good
                    log.exception("sync delivery loop failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
                self._wake.clear()
        finally:
            for task in self._active.values():
                task.cancel()
            await asyncio.gather(*self._active.values(), return_exceptions=True)
            if self._marks:
                await asyncio.to_thread(self._flush_marks)

    async def _tick(self) -> None:
        for route in await asyncio.to_thread(self.journal.pending_routes):
            if route not in self._active:
                task = asyncio.get_running_loop().create_task(self._drain(route))
                self._active[route] = task
                task.add_done_callback(lambda t, r=route: self._active.pop(r, None) if self._active.get(r) is t
                                       else None)
        if time.monotonic() - self._summarised >= SUMMARY_EVERY:
            self._summarised = time.monotonic()
            self.summary = await asyncio.to_thread(self.journal.summary)

    async def _drain(self, route: str) -> None:
        try:
            await self._drain_route(route)
        except ConnectionError as exc:
            # A shared journal whose store is away: the route is taken up again at a later tick (by whichever
            # instance then holds it); what was sent but not marked goes again, with its key.
            log.warning("sync: delivery of %s paused: %s", route, exc, extra={"event": "sync_paused", "route": route})

    async def _drain_route(self, route: str) -> None:
        while True:
            seen = self._generation.get(route, 0)
            batch = await asyncio.to_thread(self.journal.next_pending, route, BATCH)
            if not batch:
                if self._generation.get(route, 0) == seen:
                    self._active.pop(route, None)   # now, so that the next commit wakes the loop
                    return
                continue   # an entry was committed while the journal was being read
            try:
                for entry in batch:
                    await self._deliver(entry)
            finally:
                # Deliveries are marked in the journal a batch at a time: one transaction instead of one per
                # write. A crash before the mark only sends those writes again, with their keys.
                await asyncio.to_thread(self._flush_marks)

    def _flush_marks(self) -> None:
        marks, self._marks = self._marks, []
        if marks:
            self.journal.delivered(marks)

    async def _deliver(self, entry: dict[str, Any]) -> None:
        attempts = entry["attempts"]
        await self._after_shadow(entry["seq"])
        while True:
            wait = entry["next_at"] - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            backend = self.tables.current.config.backends.get(entry["target"])
            if backend is None:
                status, error = None, f"backend {entry['target']!r} is not in routes.yaml any more"
            else:
                status, error = await self._send(backend, entry)
            seq = entry["seq"]
            if status is not None and 200 <= status < 300:
                self._marks.append((seq, status))
                self.delivered += 1
                self.lags.append(time.time() - entry["created_at"])
                if self.verifier is not None:
                    self.verifier.check(entry)
                return
            if status is not None and 400 <= status < 500 and status not in RETRY_4XX:
                await asyncio.to_thread(self.journal.dead, seq, status, error or f"answered {status}")
                self.dead += 1
                log.warning("sync: %s %s to %s answered %d; kept as a dead letter (strangler sync retry %s)",
                            entry["method"], entry["raw_target"], entry["target"], status, entry["route"],
                            extra={"event": "sync_dead", "route": entry["route"], "seq": seq})
                return
            attempts += 1
            self.retries += 1
            entry["next_at"] = time.time() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempts - 1, 16))
            await asyncio.to_thread(self.journal.failed, seq, error or f"answered {status}", status,
                                    entry["next_at"])

    async def _after_shadow(self, seq: int) -> None:
        """A write that is also shadowed: its dry-run copy goes to the new side before the mirrored write."""
        ref = self._shadows.pop(seq, None)
        deadline = time.monotonic() + SHADOW_WAIT
        while ref is not None and ref() is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _send(self, backend: Backend, entry: dict[str, Any]) -> tuple[int | None, str | None]:
        headers = [(k, v) for k, v in entry["headers"] if k.lower() not in DROPPED_HEADERS]
        headers.append((SYNC_HEADER, "1"))
        timeout = backend.timeouts.connect + backend.timeouts.response
        pool = self.upstreams.pool(backend, "sync")
        try:
            async with asyncio.timeout(timeout):
                resp = await upstream.open_response(pool, entry["method"], entry["raw_target"], headers,
                                                    entry["body"] or b"")
                try:
                    body, _ = await resp.read(2048)
                finally:
                    resp.close()
        except TimeoutError:
            return None, f"no answer within {timeout:g}s"
        except GatewayError as exc:
            return None, f"{exc.code}: {exc.detail}"
        except (OSError, ValueError, RuntimeError) as exc:   # garbage from the other side must not escape
            return None, f"{type(exc).__name__}: {exc}"
        if resp.status >= 400:
            return resp.status, f"answered {resp.status}: {body.decode('utf-8', 'replace')[:500]}"
        return resp.status, None

    # -- for the surfaces and tests -----------------------------------------------------------------------------

    def lag(self) -> dict[str, float | None]:
        """Seconds from the answer to the other side's 2xx, over the recent deliveries."""
        lags = sorted(self.lags)
        if not lags:
            return {"p50_s": None, "p99_s": None, "max_s": None}
        return {"p50_s": round(lags[len(lags) // 2], 4), "p99_s": round(lags[min(len(lags) - 1,
                                                                                 int(len(lags) * 0.99))], 4),
                "max_s": round(lags[-1], 4)}

    async def settle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is pending (tests and benchmarks; raises ``TimeoutError``)."""
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.journal.pending_routes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"sync writes still pending after {timeout:g}s")
            self._wake.set()
            await asyncio.sleep(0.02)
        if self.verifier is not None:
            await self.verifier.settle(max(0.1, deadline - time.monotonic()))
