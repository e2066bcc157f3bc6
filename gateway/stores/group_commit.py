"""``GroupCommit``: the sync journal's appends, committed in batches by one writer thread.

The request path only appends (``append`` never blocks) and gets a future; the writer takes everything queued
since its last commit and hands it to ``commit`` as one batch, which resolves the futures once the batch is
durable. Both journals (SQLite, PostgreSQL) use it; ``idle`` (every ``idle_every`` seconds with nothing queued)
lets a store check on its connection.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Pending = tuple[list[Any], "concurrent.futures.Future[list[int]]"]


class GroupCommit:
    def __init__(self, commit: Callable[[list[Pending]], None], *, idle: Callable[[], None] | None = None,
                 idle_every: float | None = None, name: str = "strangler-journal") -> None:
        self._commit = commit
        self._idle = idle
        self._idle_every = idle_every
        self._queue: deque[Pending] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self.writing = threading.Lock()    # held while a batch is being committed
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def append(self, entries: list[Any]) -> concurrent.futures.Future[list[int]]:
        """Queue ``entries``; the future resolves to their sequence numbers once they are committed."""
        fut: concurrent.futures.Future[list[int]] = concurrent.futures.Future()
        with self._wake:
            if self._closed:
                fut.set_exception(RuntimeError("the sync journal is closed"))
                return fut
            self._queue.append((entries, fut))
            self._wake.notify()
        return fut

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._queue and not self._closed:
                    self._wake.wait(self._idle_every)   # None: until something is appended or closed
                if not self._queue and self._closed:
                    return
                batch = list(self._queue)
                self._queue.clear()
            with self.writing:
                if batch:
                    self._commit(batch)
                elif self._idle is not None:
                    self._idle()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was appended so far is committed (or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._wake:
                if not self._queue:
                    break
            time.sleep(0.005)
        with self.writing:   # the batch taken last is done once the lock is free
            return True

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=timeout)
