"""The waiting rooms' lines and ticket keys in SQLite (``admission.db`` in ``store.dir``): the embedded default.

The lines live in memory (``gateway.stores.waiting_line.Line``), so a queued request costs a dictionary lookup and
a binary search, never a disk write; ``maintain`` (about once a second) sweeps out visitors who stopped polling and
writes what changed since the last time in one transaction, in a worker thread. A restart therefore keeps every
place (up to the last second's arrivals) and every admitted session (the session is in the signed ticket; the
keys that sign tickets are here).

With several worker processes each keeps its own line (its rows carry the worker's index; a waiting ticket names
the worker's line) while the room's epoch is shared, so an admitted visitor passes on every worker; a shared
store (PostgreSQL) gives one line for the whole fleet behind the same interface.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from pathlib import Path

from gateway.stores import sqlite
from gateway.stores.waiting_line import Line

log = logging.getLogger("strangler.admission")

SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    route TEXT NOT NULL,
    worker INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    next_number INTEGER NOT NULL,
    PRIMARY KEY (route, worker)
);
CREATE TABLE IF NOT EXISTS places (
    route TEXT NOT NULL,
    worker INTEGER NOT NULL,
    number INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (route, worker, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticket_keys (
    kid INTEGER PRIMARY KEY AUTOINCREMENT,
    secret BLOB NOT NULL,
    created REAL NOT NULL,
    retired REAL
);
"""


class SigningKey:
    __slots__ = ("kid", "secret", "created", "retired")

    def __init__(self, kid: int, secret: bytes, created: float, retired: float | None) -> None:
        self.kid, self.secret, self.created, self.retired = kid, secret, created, retired


class SqliteAdmissionQueue:
    """``AdmissionQueue`` on SQLite: in-memory lines, written behind once a second."""

    def __init__(self, path: Path, worker: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self.available = True          # False while writes fail; the rooms then open or close as configured
        self.problem = ""
        self._lock = threading.Lock()
        self._db = sqlite.connect(path)
        self._db.executescript(SCHEMA)
        self._lines: dict[str, Line] = {}
        self._epochs: dict[str, str] = {}
        self._gone: set[str] = set()   # routes whose admission was removed: their rows go at the next write
        self._keys: list[SigningKey] = []
        self._load_keys()
        if not self._keys:
            self.rotate_key()

    # -- lines ------------------------------------------------------------------------------------------------------

    def configure(self, route: str, rate: float, capacity: float, limit: int, grace: float,
                  paused: bool) -> bool:
        """Open (or retune) the line of ``route``; True when it did not exist before, in memory or on disk."""
        now = time.monotonic()
        line = self._lines.get(route)
        if line is not None:
            line.configure(rate, capacity, limit, grace, paused, now)
            return False
        self._gone.discard(route)
        line = Line(rate, capacity, limit, grace, now, paused=paused)
        with self._lock:
            # One epoch per room, shared by every worker (an admitted ticket passes on any of them): the first
            # process to open the room picks it, under the write lock, and the others read it.
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT epoch, next_number FROM lines WHERE route = ? AND worker = ?",
                                       (route, self.worker)).fetchone()
                places = self._db.execute("SELECT number, state FROM places WHERE route = ? AND worker = ?",
                                          (route, self.worker)).fetchall()
                if row is None:
                    other = self._db.execute("SELECT epoch FROM lines WHERE route = ? LIMIT 1", (route,)).fetchone()
                    epoch = other[0] if other else secrets.token_hex(4)
                    self._db.execute("INSERT INTO lines VALUES (?, ?, ?, 1)", (route, self.worker, epoch))
                else:
                    epoch = row[0]
                    line.next_number = row[1]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        line.restore(places, now)
        self._lines[route] = line
        self._epochs[route] = epoch
        return row is None

    def remove(self, route: str) -> None:
        """The route lost its admission block: its line is dropped (here and, at the next write, on disk)."""
        if self._lines.pop(route, None) is not None:
            self._epochs.pop(route, None)
            self._gone.add(route)

    def line(self, route: str) -> Line | None:
        return self._lines.get(route)

    # The request path: each is a dictionary lookup and a little arithmetic on the route's line. A route whose
    # line is gone (its room was just removed by a reload) lets everyone in.

    def enter(self, route: str) -> bool:
        line = self._lines.get(route)
        return True if line is None else line.enter(time.monotonic())

    def join(self, route: str) -> tuple[int, int] | None:
        line = self._lines.get(route)
        return None if line is None else line.join(time.monotonic())

    def poll(self, route: str, number: int) -> int:
        line = self._lines.get(route)
        return -1 if line is None else line.poll(number, time.monotonic())

    def eta(self, route: str, position: int) -> float:
        line = self._lines.get(route)
        return 0.0 if line is None else line.eta(position)

    def waiting(self, route: str) -> int:
        line = self._lines.get(route)
        return line.waiting if line is not None else 0

    def lost(self, route: str) -> int:
        line = self._lines.get(route)
        return line.lost if line is not None else 0

    def epoch(self, route: str) -> str:
        return self._epochs.get(route, "")

    def line_id(self, route: str) -> str:
        # Numbers are this worker's: a waiting ticket names the worker's line, so it is never read as a place in
        # another worker's line.
        epoch = self._epochs.get(route)
        return f"{epoch}.{self.worker}" if epoch else ""

    def routes(self) -> list[str]:
        return list(self._lines)

    # -- keys -------------------------------------------------------------------------------------------------------

    def keys(self) -> list[SigningKey]:
        """Newest first: the first signs, the others still verify while their grace lasts."""
        return self._keys

    def rotate_key(self) -> SigningKey:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE ticket_keys SET retired = ? WHERE retired IS NULL", (now,))
                self._db.execute("INSERT INTO ticket_keys (secret, created) VALUES (?, ?)",
                                 (secrets.token_bytes(32), now))
                # Keys retired a day ago verify nothing any more (sessions and graces are far shorter).
                self._db.execute("DELETE FROM ticket_keys WHERE retired < ?", (now - 86400.0,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._load_keys()
        return self._keys[0]

    def _load_keys(self) -> None:
        with self._lock:
            rows = self._db.execute("SELECT kid, secret, created, retired FROM ticket_keys ORDER BY kid DESC"
                                    ).fetchall()
        keys = [SigningKey(r[0], bytes(r[1]), r[2], r[3]) for r in rows]
        # The same list object while nothing changed: signers remember what they verified until it changes.
        if [(k.kid, k.retired) for k in keys] != [(k.kid, k.retired) for k in self._keys]:
            self._keys = keys

    # -- upkeep -----------------------------------------------------------------------------------------------------

    async def maintain(self) -> int:
        """Sweep out visitors who stopped polling, then write what changed (in a thread); returns how many lost
        their place. Another process's key rotation is picked up here too."""
        now = time.monotonic()
        lost = 0
        batch: list[tuple[str, int, dict[int, str | None]]] = []
        for route, line in self._lines.items():
            line.advance(now)
            lost += line.sweep(now)
            dirty = line.take_dirty()
            if dirty:
                batch.append((route, line.next_number, dirty))
        gone, self._gone = self._gone, set()
        try:
            await asyncio.to_thread(self._write, batch, gone)
            await asyncio.to_thread(self._load_keys)
        except Exception as exc:  # the disk is full or gone: keep serving from memory, and say so
            if self.available:
                log.error("waiting-room store unavailable: %s", exc, extra={"event": "admission_store_down"})
            self.available, self.problem = False, str(exc)
            for route, _next, dirty in batch:        # write these again next time
                line = self._lines.get(route)
                if line is not None:
                    line.dirty = {**dirty, **line.dirty}
            self._gone |= gone
        else:
            if not self.available:
                log.warning("waiting-room store available again", extra={"event": "admission_store_up"})
            self.available, self.problem = True, ""
        return lost

    def _write(self, batch: list[tuple[str, int, dict[int, str | None]]], gone: set[str]) -> None:
        if not batch and not gone:
            return
        w = self.worker
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for route in gone:
                    self._db.execute("DELETE FROM places WHERE route = ? AND worker = ?", (route, w))
                    self._db.execute("DELETE FROM lines WHERE route = ? AND worker = ?", (route, w))
                for route, next_number, dirty in batch:
                    self._db.execute("UPDATE lines SET next_number = ? WHERE route = ? AND worker = ?",
                                     (next_number, route, w))
                    self._db.executemany("INSERT OR REPLACE INTO places VALUES (?, ?, ?, ?)",
                                         [(route, w, n, s) for n, s in dirty.items() if s is not None])
                    self._db.executemany("DELETE FROM places WHERE route = ? AND worker = ? AND number = ?",
                                         [(route, w, n) for n, s in dirty.items() if s is None])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    async def flush(self) -> None:
        """Write what changed now (at shutdown), without sweeping anyone out."""
        batch = [(route, line.next_number, line.take_dirty()) for route, line in self._lines.items()]
        gone, self._gone = self._gone, set()
        await asyncio.to_thread(self._write, [b for b in batch if b[2]], gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()
