"""``PinStore`` on the shared store: rollback pins, canary steps and history for a whole fleet.

``pins`` and ``steps`` are snapshots the request path reads without a lock: the database's rows as last read by
the link thread, with this instance's writes that are not committed yet laid over them. So a rollback asked of
an instance applies to it at once, whether or not the store is reachable, and reaches the others when it is
committed (they are notified, and re-read every second anyway).

Two instances may roll the same route back at once (each guard judging the fleet's traffic): the pin is a
conditional insert (``ON CONFLICT DO NOTHING``), and only the insert that took place records the rollback in the
history, so it is recorded exactly once. A resume is a delete that records only when it removed a pin; a canary
step is an upsert that only moves forward.

The snapshot, and the pins and steps not yet committed, are also kept in a small file in ``store.dir``: an
instance that restarts while the store is away starts on them instead of on nothing. At a stop, everything the
link could not write (history entries and statistics too) goes into that file, and the next start queues it
again, so a restart during an outage loses nothing written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.stores import sqlite
from gateway.stores.postgres.link import Link
from gateway.stores.postgres.peers import StatsOp
from gateway.stores.state import Pin, Step

log = logging.getLogger("strangler.store")

MAX_HISTORY = 100_000


@dataclass
class PinOp:
    route: str
    fingerprint: str
    actor: str
    reason: str
    at: float
    detail: dict[str, Any]
    instance: str
    keep: bool = True
    done: bool = field(default=False, repr=False)

    def apply(self, cur: psycopg.Cursor[Any]) -> bool:
        cur.execute("INSERT INTO pins (route, fingerprint, actor, reason, at, instance) VALUES (%s, %s, %s, %s, "
                    "%s, %s) ON CONFLICT (route) DO NOTHING RETURNING route",
                    (self.route, self.fingerprint, self.actor, self.reason, self.at, self.instance))
        if cur.fetchone() is None:
            return False   # another instance pinned it first, and recorded it
        _history(cur, self.at, "rollback", self.route, self.actor, self.reason, self.detail, self.instance)
        return True

    def overlay(self, pins: dict[str, Pin], steps: dict[str, Step]) -> None:
        pins.setdefault(self.route, Pin(self.route, self.fingerprint, self.actor, self.reason, self.at))


@dataclass
class UnpinOp:
    route: str
    actor: str
    reason: str
    kind: str
    at: float
    instance: str
    keep: bool = True
    done: bool = field(default=False, repr=False)

    def apply(self, cur: psycopg.Cursor[Any]) -> bool:
        cur.execute("DELETE FROM pins WHERE route = %s RETURNING route", (self.route,))
        if cur.fetchone() is None:
            return False
        _history(cur, self.at, self.kind, self.route, self.actor, self.reason, {}, self.instance)
        return True

    def overlay(self, pins: dict[str, Pin], steps: dict[str, Step]) -> None:
        pins.pop(self.route, None)


@dataclass
class StepOp:
    route: str
    fingerprint: str
    step: int
    actor: str
    reason: str
    at: float
    detail: dict[str, Any] | None
    instance: str
    keep: bool = True
    done: bool = field(default=False, repr=False)

    def apply(self, cur: psycopg.Cursor[Any]) -> bool:
        # Only forward, or a new version of the route: two instances taking the same step record it once.
        cur.execute("INSERT INTO steps (route, fingerprint, step, at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (route) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, step = EXCLUDED.step, "
                    "at = EXCLUDED.at WHERE steps.fingerprint <> EXCLUDED.fingerprint OR steps.step < EXCLUDED.step "
                    "RETURNING route", (self.route, self.fingerprint, self.step, self.at))
        if cur.fetchone() is None:
            return False
        if self.detail is not None:
            _history(cur, self.at, "canary_step", self.route, self.actor, self.reason, self.detail, self.instance)
        return True

    def overlay(self, pins: dict[str, Pin], steps: dict[str, Step]) -> None:
        saved = steps.get(self.route)
        if saved is None or saved.fingerprint != self.fingerprint or saved.index < self.step:
            steps[self.route] = Step(self.fingerprint, self.step, self.at)


@dataclass
class RecordOp:
    kind: str
    route: str | None
    actor: str
    reason: str
    at: float
    detail: dict[str, Any]
    instance: str
    keep: bool = False
    done: bool = field(default=False, repr=False)

    def apply(self, cur: psycopg.Cursor[Any]) -> bool:
        _history(cur, self.at, self.kind, self.route, self.actor, self.reason, self.detail, self.instance)
        return False

    def as_row(self) -> dict[str, Any]:
        return {"id": None, "at": self.at, "kind": self.kind, "route": self.route, "actor": self.actor,
                "reason": self.reason, "detail": self.detail, "instance": self.instance, "pending": True}


StateOp = PinOp | UnpinOp | StepOp
# Every buffered write the local copy can hold, by name.
_OP_TYPES: dict[str, Any] = {"pin": PinOp, "unpin": UnpinOp, "step": StepOp, "record": RecordOp, "stats": StatsOp}
_OP_NAMES = {t: name for name, t in _OP_TYPES.items()}


def _history(cur: psycopg.Cursor[Any], at: float, kind: str, route: str | None, actor: str, reason: str,
             detail: dict[str, Any], instance: str) -> None:
    cur.execute("INSERT INTO history (at, kind, route, actor, reason, detail, instance) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (at, kind, route, actor, reason, Jsonb(json.loads(json.dumps(detail, default=str))), instance))
    row = cur.fetchone()
    if row and row[0] % 1000 == 0:
        cur.execute("DELETE FROM history WHERE id <= %s", (row[0] - MAX_HISTORY,))


class PgPinStore:
    def __init__(self, link: Link, instance: str, local_copy: Path) -> None:
        self.link = link
        self.instance = instance
        self.local_copy = local_copy
        self._lock = threading.Lock()
        self._db_pins: dict[str, Pin] = {}
        self._db_steps: dict[str, Step] = {}
        self._pending: list[StateOp] = []
        self._records: list[RecordOp] = []
        self._pins: dict[str, Pin] = {}
        self._steps: dict[str, Step] = {}
        self._version = 0
        self._seen = -1
        link.add_reader(self._read)

    def start(self) -> None:
        """Read the state now if the store answers, else start on the local copy; either way, queue again what
        the last run could not write. Then follow the store."""
        connected = self.link.connect_now()
        self._load_local_copy(snapshot=not connected)
        self.link.start()

    def close(self) -> None:
        self.link.close()
        with self._lock:
            self._save_local_copy(unwritten=self.link.unwritten())

    # -- the snapshots ---------------------------------------------------------------------------------------------

    @property
    def pins(self) -> dict[str, Pin]:
        return self._pins

    @property
    def steps(self) -> dict[str, Step]:
        return self._steps

    def refresh(self) -> bool:
        """True when the snapshot changed since the last call (the link thread keeps it current)."""
        changed = self._version != self._seen
        self._seen = self._version
        return changed

    def _read(self, cur: psycopg.Cursor[Any]) -> None:
        cur.execute("SELECT route, fingerprint, actor, reason, at FROM pins")
        pins = {r[0]: Pin(*r) for r in cur.fetchall()}
        cur.execute("SELECT route, fingerprint, step, at FROM steps")
        steps = {r[0]: Step(r[1], r[2], r[3]) for r in cur.fetchall()}
        with self._lock:
            self._db_pins, self._db_steps = pins, steps
            self._rebuild()

    def _rebuild(self) -> None:
        """Lay the writes not yet committed over the database's rows (with ``_lock`` held)."""
        before = len(self._pending)
        self._pending = [op for op in self._pending if not op.done]
        self._records = [op for op in self._records if not op.done]
        pins, steps = dict(self._db_pins), dict(self._db_steps)
        for op in self._pending:
            op.overlay(pins, steps)
        changed = pins != self._pins or steps != self._steps
        if changed:
            self._version += 1
            self._pins, self._steps = pins, steps
        if changed or len(self._pending) != before:
            self._save_local_copy()

    def _submit(self, op: StateOp) -> None:
        with self._lock:
            self._pending.append(op)
            self.link.submit(op)
            self._rebuild()

    # -- writes ----------------------------------------------------------------------------------------------------

    def pin(self, route: str, fingerprint: str, actor: str, reason: str,
            detail: dict[str, Any] | None = None) -> Pin:
        op = PinOp(route, fingerprint, actor, reason, time.time(), detail or {}, self.instance)
        self._submit(op)
        return self._pins.get(route) or Pin(route, fingerprint, actor, reason, op.at)

    def unpin(self, route: str, actor: str, reason: str = "", kind: str = "resume") -> bool:
        if route not in self._pins:
            return False
        self._submit(UnpinOp(route, actor, reason, kind, time.time(), self.instance))
        return True

    def set_step(self, route: str, fingerprint: str, step: int, actor: str, reason: str,
                 detail: dict[str, Any] | None = None) -> None:
        self._submit(StepOp(route, fingerprint, step, actor, reason, time.time(), detail, self.instance))

    def record(self, kind: str, route: str | None, actor: str, reason: str = "",
               detail: dict[str, Any] | None = None) -> None:
        op = RecordOp(kind, route, actor, reason, time.time(), detail or {}, self.instance)
        if self.link.submit(op):
            with self._lock:
                self._records.append(op)

    # -- reads -----------------------------------------------------------------------------------------------------

    def history(self, route: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """The fleet's history, newest first; while the store is away, what this instance has not written yet."""
        try:
            rows = self.link.query(
                "SELECT id, at, kind, route, actor, reason, detail, instance FROM history "
                "WHERE (%s::text IS NULL OR route = %s) ORDER BY id DESC LIMIT %s", (route, route, limit))
        except psycopg.Error:
            with self._lock:
                pending = [op.as_row() for op in self._records if route is None or op.route == route]
            return sorted(pending, key=lambda r: r["at"], reverse=True)[:limit]
        return [{"id": r[0], "at": r[1], "kind": r[2], "route": r[3], "actor": r[4], "reason": r[5],
                 "detail": r[6], "instance": r[7]} for r in rows]

    # -- the local copy --------------------------------------------------------------------------------------------

    def _save_local_copy(self, unwritten: list[Any] | None = None) -> None:
        """The snapshot and the pins and steps not yet written; at a stop, everything not yet written."""
        ops = unwritten if unwritten is not None else [op for op in self._pending if not op.done]
        data = {"saved_at": time.time(),
                "pins": {k: [p.fingerprint, p.actor, p.reason, p.at] for k, p in self._db_pins.items()},
                "steps": {k: list(s) for k, s in self._db_steps.items()},
                "pending": [{"op": _op_name(op), **_fields(op)} for op in ops if type(op) in _OP_NAMES]}
        tmp = self.local_copy.with_name(f".{self.local_copy.name}.{os.getpid()}.tmp")
        try:
            # Private, as the SQLite state files are: it names routes, actors and reasons.
            sqlite.private_dir(self.local_copy.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, sqlite.FILE_MODE)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data, default=str))
            os.replace(tmp, self.local_copy)
        except OSError as exc:
            log.warning("could not save the local copy of the state in %s: %s", self.local_copy, exc)

    def _load_local_copy(self, snapshot: bool) -> None:
        """Queue again what the last run left unwritten; with ``snapshot`` (the store is away), also start on the
        pins and steps it last knew."""
        try:
            data = json.loads(self.local_copy.read_text())
        except FileNotFoundError:
            if snapshot:
                log.error("the store is unreachable and there is no local copy of its state (%s): starting with "
                          "no rollback pins", self.local_copy)
            return
        except (OSError, ValueError) as exc:
            log.error("the local copy of the state %s is unreadable (%s)%s", self.local_copy, exc,
                      ": starting with no rollback pins" if snapshot else "")
            return
        with self._lock:
            if snapshot:
                self._db_pins = {k: Pin(k, *v) for k, v in data.get("pins", {}).items()}
                self._db_steps = {k: Step(*v) for k, v in data.get("steps", {}).items()}
            for item in data.get("pending", []):
                op = _OP_TYPES[item.pop("op")](**item)
                if isinstance(op, RecordOp):
                    self._records.append(op)
                elif not isinstance(op, StatsOp):
                    self._pending.append(op)
                self.link.submit(op)
            self._rebuild()
        if snapshot:
            log.warning("the store is unreachable: starting on the local copy of its state saved at %s "
                        "(%d pin(s))", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data.get("saved_at", 0))),
                        len(self._pins))


def _op_name(op: Any) -> str:
    return _OP_NAMES[type(op)]


def _fields(op: Any) -> dict[str, Any]:
    out = asdict(op)
    out.pop("done", None)
    out.pop("keep", None)
    return out
