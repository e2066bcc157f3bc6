"""The one thread that talks to the shared store, and what an outage looks like.

It holds two connections: one in autocommit that only LISTENs (psycopg#340: waiting for notifications blocks
other commands on the same connection), and one for writes and re-reads. Each cycle it:

1. writes the buffered operations (``Op``) in order, in one transaction, and NOTIFYs when one changed shared
   state (a notification is delivered at commit, and only to those listening; it is a wake-up hint, never data);
2. re-reads the state when notified, after its own writes, and at least every ``REREAD_S`` (the safety net for
   notifications lost while disconnected);
3. sends the instance's heartbeat every ``HEARTBEAT_S``.

Writers on the event loop only append to the buffer, so the request path never waits for the database. The
buffer is bounded (``MAX_BUFFERED``); beyond it new records are dropped and counted, except the operations that
change which side serves a route (pins and steps), which are always kept.

When a statement fails because the server went away, the link is *down*: it closes both connections, keeps
buffering, and reconnects with exponential backoff (``BACKOFF_S``). After reconnecting it re-reads everything
before writing, since notifications sent while it was away are lost.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from gateway.stores.postgres.schema import migrate

log = logging.getLogger("strangler.store")

CHANNEL = "strangler_state"
MAX_BUFFERED = 100_000
BATCH = 500
REREAD_S = 1.0
HEARTBEAT_S = 1.0
BACKOFF_S = (0.1, 2.0)   # first retry, longest wait between two retries


class Op(Protocol):
    """One buffered write. ``keep``: never dropped when the buffer is full. ``apply`` runs inside the link's
    transaction and returns True when other instances should re-read (a pin, a step)."""

    keep: bool
    done: bool

    def apply(self, cur: psycopg.Cursor[Any]) -> bool: ...


Reader = Callable[[psycopg.Cursor[Any]], None]


class Link:
    def __init__(self, conninfo: str, display_url: str, instance: str) -> None:
        self.conninfo = conninfo
        self.display_url = display_url
        self.instance = instance
        self.up = False
        self.since = time.time()          # when ``up`` last changed
        self.error: str | None = None     # why the link is down (the server's message, never the URL)
        self.dropped = 0
        self.outages = 0
        self._ops: collections.deque[Op] = collections.deque()
        self._readers: list[Reader] = []
        self._periodic: list[Reader] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listen: psycopg.Connection | None = None
        self._work: psycopg.Connection | None = None
        self._thread: threading.Thread | None = None
        self._read_lock = threading.Lock()
        self._reader: psycopg.Connection | None = None
        self._reread = True
        self._backoff = BACKOFF_S[0]

    # -- what the stores use ---------------------------------------------------------------------------------------

    def add_reader(self, reader: Reader) -> None:
        """``reader`` re-reads part of the state: after every (re)connect, notification and ``REREAD_S``."""
        self._readers.append(reader)

    def add_periodic(self, task: Reader) -> None:
        """``task`` runs every ``HEARTBEAT_S`` while connected (heartbeats, statistics)."""
        self._periodic.append(task)

    def submit(self, op: Op) -> bool:
        """Buffer a write (never blocks); False when the buffer is full and the record was dropped."""
        with self._lock:
            if len(self._ops) >= MAX_BUFFERED and not op.keep:
                self.dropped += 1
                return False
            self._ops.append(op)
        self._wake.set()
        return True

    @property
    def buffered(self) -> int:
        return len(self._ops)

    def unwritten(self) -> list[Op]:
        """What is still buffered (after ``close``: what could not be written before stopping)."""
        with self._lock:
            return list(self._ops)

    def status(self) -> dict[str, Any]:
        return {"kind": "postgresql", "url": self.display_url, "up": self.up, "since": self.since,
                "error": self.error, "buffered": self.buffered, "dropped": self.dropped, "outages": self.outages}

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """A read for the admin API, on its own connection (blocking: call it from a worker thread). While the
        link is down it fails at once instead of waiting for a connect timeout."""
        if not self.up:
            raise psycopg.OperationalError(f"the store is unreachable: {self.error}")
        with self._read_lock:
            try:
                if self._reader is None or self._reader.closed:
                    self._reader = psycopg.connect(self.conninfo, autocommit=True)
                return self._reader.execute(sql.encode(), args).fetchall()
            except psycopg.Error:
                if self._reader is not None:
                    self._reader.close()
                self._reader = None
                raise

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def connect_now(self) -> bool:
        """One attempt, on the caller's thread (start-up): True when connected and the state was read."""
        try:
            self._connect()
            self._read_all()
            return True
        except psycopg.Error as exc:
            self._down(exc)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="strangler-store", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after one last attempt to write what is buffered (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.up and self._ops and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 2)
        self._close_connections()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()

    # -- the thread ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_beat = 0.0
        next_read = 0.0
        while not self._stop.is_set():
            if not self.up:
                if not self._reconnect():
                    continue
                next_beat = next_read = 0.0
            try:
                now = time.monotonic()
                if self._reread or now >= next_read:
                    self._read_all()
                    next_read = now + REREAD_S
                if self._ops:
                    self._flush()
                if now >= next_beat:
                    self._run_periodic()
                    next_beat = now + HEARTBEAT_S
                self._wait(min(next_beat, next_read) - time.monotonic())
            except psycopg.Error as exc:
                self._down(exc)
            except Exception:  # a bug in one reader must not end the thread that carries every write
                log.exception("the store thread hit an unexpected error; reconnecting")
                self._down(None)

    def _wait(self, timeout: float) -> None:
        """Wait for a notification or a buffered write, at most ``timeout`` seconds."""
        assert self._listen is not None
        end = time.monotonic() + max(0.0, timeout)
        while not self._stop.is_set() and not self._wake.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            # Short slices: a buffered write wakes ``_wake``, which the notification wait cannot see.
            for _ in self._listen.notifies(timeout=min(left, 0.02), stop_after=1):
                self._reread = True
            if self._reread:
                return
        self._wake.clear()

    def _reconnect(self) -> bool:
        if self._stop.wait(self._backoff):
            return False
        try:
            self._connect()
        except psycopg.Error as exc:
            self._backoff = min(self._backoff * 2, BACKOFF_S[1])
            self.error = _reason(exc)
            return False
        self._reread = True
        return True

    def _connect(self) -> None:
        self._close_connections()
        listen = psycopg.connect(self.conninfo, autocommit=True)
        try:
            work = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.Error:
            listen.close()
            raise
        self._listen, self._work = listen, work
        migrate(work)
        listen.execute(f"LISTEN {CHANNEL}")
        was_down = not self.up
        self.up, self.error, self._backoff = True, None, BACKOFF_S[0]
        if was_down:
            self.since = time.time()
            log.info("store %s connected", self.display_url, extra={"event": "store_up"})

    def _down(self, exc: BaseException | None) -> None:
        self._close_connections()
        if self.up:
            self.outages += 1
            self.since = time.time()
            log.error("store %s unreachable (%s): serving on the last known state, buffering writes",
                      self.display_url, _reason(exc), extra={"event": "store_down"})
        self.up = False
        self.error = _reason(exc)

    def _close_connections(self) -> None:
        for conn in (self._listen, self._work):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail again; it is gone
                    pass
        self._listen = self._work = None

    def _read_all(self) -> None:
        assert self._work is not None
        self._reread = False
        with self._work.transaction(), self._work.cursor() as cur:
            for reader in self._readers:
                reader(cur)

    def _run_periodic(self) -> None:
        assert self._work is not None
        with self._work.cursor() as cur:
            for task in self._periodic:
                with self._work.transaction():
                    task(cur)

    def _flush(self) -> None:
        """Write up to ``BATCH`` buffered operations in one transaction; they leave the buffer only once
        committed, and are marked done only after the state was re-read, so the snapshot never loses a pin
        between its commit and the re-read that shows it."""
        assert self._work is not None
        with self._lock:
            batch = [self._ops[i] for i in range(min(BATCH, len(self._ops)))]
        notify = False
        with self._work.transaction(), self._work.cursor() as cur:
            for op in batch:
                notify = op.apply(cur) or notify
            if notify:
                cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.instance))
        with self._lock:
            for _ in batch:
                self._ops.popleft()
        if notify or any(op.keep for op in batch):
            self._read_all()
        for op in batch:
            op.done = True


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "internal error"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
