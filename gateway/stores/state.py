"""Runtime state that is not in routes.yaml: rollback pins and the history of what happened to each route.

It lives in a small SQLite database in the store directory beside routes.yaml, so it survives restarts and is
shared by every worker process on the machine (each worker notices another's write through ``data_version``).
Writes are rare (a rollback, a reload) and small, so they run inline; reads of the pins are cached in memory.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gateway.stores import sqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    route TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    route TEXT,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS history_route ON history(route, id);
CREATE TABLE IF NOT EXISTS steps (
    route TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    step INTEGER NOT NULL,
    at REAL NOT NULL
);
"""

MAX_HISTORY = 10_000


@dataclass(frozen=True, slots=True)
class Pin:
    route: str
    fingerprint: str
    actor: str
    reason: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"actor": self.actor, "reason": self.reason, "at": self.at}


class Step(NamedTuple):
    """Where a progressive canary stands: for which version of the route, which step, since when."""
    fingerprint: str
    index: int
    at: float


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite.connect(path)
        self._db.executescript(SCHEMA)
        self._version = -1
        self._pins: dict[str, Pin] = {}
        self._steps: dict[str, Step] = {}
        self.refresh()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- pins ----------------------------------------------------------------------------------------------------

    @property
    def pins(self) -> dict[str, Pin]:
        return self._pins

    def refresh(self) -> bool:
        """Reload the pins if any process changed the database since the last look; True when they changed."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return False
            self._version = version
            rows = self._db.execute("SELECT route, fingerprint, actor, reason, at FROM pins").fetchall()
            step_rows = self._db.execute("SELECT route, fingerprint, step, at FROM steps").fetchall()
        pins = {r[0]: Pin(*r) for r in rows}
        changed = pins != self._pins
        self._pins = pins
        self._steps = {r[0]: Step(r[1], r[2], r[3]) for r in step_rows}
        return changed

    def pin(self, route: str, fingerprint: str, actor: str, reason: str, detail: dict[str, Any] | None = None) -> Pin:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?, ?)",
                                 (route, fingerprint, actor, reason, now))
                self._record(now, "rollback", route, actor, reason, detail or {})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        pin = Pin(route, fingerprint, actor, reason, now)
        self._pins = {**self._pins, route: pin}
        return pin

    def unpin(self, route: str, actor: str, reason: str = "", kind: str = "resume") -> bool:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("DELETE FROM pins WHERE route = ?", (route,))
                existed = cur.rowcount > 0
                if existed:
                    self._record(now, kind, route, actor, reason, {})
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if existed:
            self._pins = {k: v for k, v in self._pins.items() if k != route}
        return existed

    # -- progressive canary steps ----------------------------------------------------------------------------------

    @property
    def steps(self) -> dict[str, Step]:
        return self._steps

    def set_step(self, route: str, fingerprint: str, step: int, actor: str, reason: str,
                 detail: dict[str, Any] | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?)", (route, fingerprint, step, now))
                if detail is not None:
                    self._record(now, "canary_step", route, actor, reason, detail)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._steps = {**self._steps, route: Step(fingerprint, step, now)}

    # -- history -------------------------------------------------------------------------------------------------

    def record(self, kind: str, route: str | None, actor: str, reason: str = "",
               detail: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._record(time.time(), kind, route, actor, reason, detail or {})

    def _record(self, at: float, kind: str, route: str | None, actor: str, reason: str,
                detail: dict[str, Any]) -> None:
        cur = self._db.execute(
            "INSERT INTO history (at, kind, route, actor, reason, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, route, actor, reason, json.dumps(detail, default=str)))
        if cur.lastrowid and cur.lastrowid % 500 == 0:
            self._db.execute("DELETE FROM history WHERE id <= ?", (cur.lastrowid - MAX_HISTORY,))

    def history(self, route: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT id, at, kind, route, actor, reason, detail FROM history"
        args: tuple[Any, ...] = ()
        if route:
            sql += " WHERE route = ?"
            args = (route,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, args + (limit,)).fetchall()
        return [{"id": r[0], "at": r[1], "kind": r[2], "route": r[3], "actor": r[4], "reason": r[5],
                 "detail": json.loads(r[6])} for r in rows]
