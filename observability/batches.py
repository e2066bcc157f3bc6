"""A queue the event loop appends to and a background thread drains in batches.

Both the access log and the trace store work this way: the request path only appends to a deque (bounded:
beyond ``limit`` items the item is dropped and counted) and never waits; a writer thread wakes every ``interval``
seconds (or when ``flush`` asks) and hands what has accumulated to ``write_batch`` in one go, so the costly part
(SQLite, the write system calls) is paid per batch and off the loop.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any


class BatchWriter:
    """Subclasses implement ``write_batch(batch)`` (called in the writer thread) and may override ``run_writer``
    to hold a resource (a database connection) for the thread's lifetime and ``has_backlog`` to be called even
    with an empty batch."""

    def __init__(self, thread_name: str, *, interval: float, limit: int, max_batch: int | None = None,
                 start: bool = True) -> None:
        self.dropped = 0          # items refused because the queue was full, or lost with a failed batch
        self._thread_name = thread_name
        self._interval = interval
        self._limit = limit
        self._max_batch = max_batch
        self._pending: collections.deque[Any] = collections.deque()
        self._queued = 0
        self._done = 0
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        if start:
            self._start()

    # -- the event loop's side (never blocks) ----------------------------------------------------------------------

    def put(self, item: Any) -> bool:
        if len(self._pending) >= self._limit:
            self.dropped += 1
            return False
        self._pending.append(item)
        self._queued += 1
        if self._thread is None:
            self._start()
        return True

    def put_many(self, items: list[Any]) -> None:
        """``put`` for a batch (what fits under ``limit``; the rest is dropped and counted)."""
        room = self._limit - len(self._pending)
        if room < len(items):
            self.dropped += len(items) - max(room, 0)
            items = items[:max(room, 0)]
        self._pending.extend(items)
        self._queued += len(items)
        if self._thread is None and items:
            self._start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written; False on timeout or without a writer thread."""
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self.flush()
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # -- the writer thread -----------------------------------------------------------------------------------------

    def write_batch(self, batch: list[Any]) -> None:
        raise NotImplementedError

    def has_backlog(self) -> bool:
        """Work left from earlier batches that needs a call even when nothing new was queued."""
        return False

    def run_writer(self) -> None:
        self.drain_forever()

    def drain_forever(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            batch = []
            # popleft is atomic: the event loop may append meanwhile.
            while pending and (self._max_batch is None or len(batch) < self._max_batch):
                batch.append(pending.popleft())
            if batch or self.has_backlog():
                try:
                    self.write_batch(batch)
                except Exception:  # a broken stream or file must not kill the thread (and never the gateway)
                    self.dropped += len(batch)
                self._done += len(batch)
                if self._max_batch is not None and len(pending) >= self._max_batch:
                    # A full batch is already waiting: write it now. Waiting out the interval would cap the
                    # writer at max_batch per interval (the comparison store: 2,000 a second) and let a faster
                    # producer's backlog grow without bound.
                    self._wake.set()
            elif self._closing:
                return

    def _start(self) -> None:
        self._thread = threading.Thread(target=self.run_writer, name=self._thread_name, daemon=True)
        self._thread.start()
