"""The comparison store: counters and capped samples of shadow comparisons, in SQLite beside routes.yaml.

Writes never happen on the request path: ``put`` appends to an in-memory queue (bounded: when it is full the record
is dropped and counted) and a writer thread commits them in batches. After each batch the writer enforces the
retention bounds (samples per route and verdict, sample age, distinct fields per route), so the file cannot grow
without limit whatever the traffic. Reads (admin API, CLI) use their own connection.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    trace_id TEXT,
    primary_backend TEXT, shadow_backend TEXT,
    primary_status INTEGER, shadow_status INTEGER,
    primary_ms REAL, shadow_ms REAL,
    differences TEXT NOT NULL DEFAULT '[]',
    ignored TEXT NOT NULL DEFAULT '[]',
    request_headers TEXT NOT NULL DEFAULT '[]', request_body BLOB,
    primary_headers TEXT NOT NULL DEFAULT '[]', primary_body BLOB, primary_truncated INTEGER DEFAULT 0,
    shadow_headers TEXT NOT NULL DEFAULT '[]', shadow_body BLOB, shadow_truncated INTEGER DEFAULT 0,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS samples_route ON samples(route, verdict, id);
CREATE INDEX IF NOT EXISTS samples_at ON samples(at);
CREATE TABLE IF NOT EXISTS verdicts (route TEXT, verdict TEXT, n INTEGER NOT NULL, PRIMARY KEY (route, verdict));
CREATE TABLE IF NOT EXISTS skips (route TEXT, reason TEXT, n INTEGER NOT NULL, PRIMARY KEY (route, reason));
CREATE TABLE IF NOT EXISTS fields (
    route TEXT, field TEXT, kind TEXT, counted INTEGER NOT NULL DEFAULT 0, ignored INTEGER NOT NULL DEFAULT 0,
    last_id INTEGER, PRIMARY KEY (route, field, kind)
);
CREATE TABLE IF NOT EXISTS noise (
    route TEXT, field TEXT, differed INTEGER NOT NULL, PRIMARY KEY (route, field)
);
CREATE TABLE IF NOT EXISTS noise_samples (route TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""

MAX_FIELDS_PER_ROUTE = 500
QUEUE_LIMIT = 10_000
BATCH = 200


@dataclass(slots=True)
class Record:
    """One comparison (or skip/error), as the shadow dispatcher hands it over."""

    route: str
    method: str
    target: str
    verdict: str
    reason: str = ""
    trace_id: str | None = None
    primary_backend: str = ""
    shadow_backend: str = ""
    primary_status: int | None = None
    shadow_status: int | None = None
    primary_ms: float | None = None
    shadow_ms: float | None = None
    differences: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes | None = None
    primary_headers: list[tuple[str, str]] = field(default_factory=list)
    primary_body: bytes | None = None
    primary_truncated: bool = False
    shadow_headers: list[tuple[str, str]] = field(default_factory=list)
    shadow_body: bytes | None = None
    shadow_truncated: bool = False
    at: float = field(default_factory=time.time)
    replay: bool = False


class DiffStore:
    def __init__(self, path: Path, *, max_samples: int = 200, max_age: float = 7 * 86400.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_samples = max_samples
        self.max_age = max_age
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_LIMIT)
        init = self._connect()
        init.executescript(SCHEMA)
        init.close()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._writer, name="strangler-diffstore", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- writing (any thread, never blocks) ------------------------------------------------------------------------

    def put(self, item: Record | tuple[str, ...]) -> bool:
        try:
            self._queue.put_nowait(item)
            self._idle.clear()
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def skip(self, route: str, reason: str) -> None:
        self.put(("skip", route, reason))

    def noise_sample(self, route: str, fields: frozenset[str]) -> None:
        self.put(("noise", route, json.dumps(sorted(fields))))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(0.05):
                return True
        return False

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    def _writer(self) -> None:
        db = self._connect()
        last_retention = 0.0
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                self._write(db, batch)
                if time.monotonic() - last_retention > 1.0 or len(batch) == BATCH:
                    self._retain(db)
                    last_retention = time.monotonic()
            except sqlite3.Error:
                self.dropped += len(batch)
            if self._queue.empty():
                self._idle.set()
        db.close()

    def _write(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        db.execute("BEGIN")
        try:
            for item in batch:
                if isinstance(item, Record):
                    self._insert(db, item)
                elif item[0] == "skip":
                    db.execute("INSERT INTO skips VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1",
                               (item[1], item[2]))
                elif item[0] == "noise":
                    self._noise(db, item[1], json.loads(item[2]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, db: sqlite3.Connection, r: Record) -> None:
        cur = db.execute(
            "INSERT INTO samples (at, route, method, target, verdict, reason, trace_id, primary_backend, "
            "shadow_backend, primary_status, shadow_status, primary_ms, shadow_ms, differences, ignored, "
            "request_headers, request_body, primary_headers, primary_body, primary_truncated, shadow_headers, "
            "shadow_body, shadow_truncated, replay) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?)",
            (r.at, r.route, r.method, r.target, r.verdict, r.reason, r.trace_id, r.primary_backend,
             r.shadow_backend, r.primary_status, r.shadow_status, r.primary_ms, r.shadow_ms,
             json.dumps(r.differences, default=str), json.dumps(r.ignored, default=str),
             json.dumps(r.request_headers), r.request_body, json.dumps(r.primary_headers), r.primary_body,
             int(r.primary_truncated), json.dumps(r.shadow_headers), r.shadow_body, int(r.shadow_truncated),
             int(r.replay)))
        sample_id = cur.lastrowid
        if r.replay:
            return
        db.execute("INSERT INTO verdicts VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (r.route, r.verdict))
        for diffs, column in ((r.differences, "counted"), (r.ignored, "ignored")):
            for d in {(d.get("field", d.get("path", "?")), d.get("kind", "changed")) for d in diffs}:
                db.execute(f"INSERT INTO fields (route, field, kind, {column}, last_id) VALUES (?, ?, ?, 1, ?) "
                           f"ON CONFLICT DO UPDATE SET {column} = {column} + 1, last_id = excluded.last_id",
                           (r.route, d[0], d[1], sample_id))

    def _noise(self, db: sqlite3.Connection, route: str, fields: list[str]) -> None:
        db.execute("INSERT INTO noise_samples VALUES (?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (route,))
        for f in fields:
            db.execute("INSERT INTO noise VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET differed = differed + 1",
                       (route, f))

    def _retain(self, db: sqlite3.Connection) -> None:
        """Keep the newest ``max_samples`` per route and verdict, nothing older than ``max_age``, and at most
        ``MAX_FIELDS_PER_ROUTE`` field counters per route (the least frequent go first)."""
        db.execute("DELETE FROM samples WHERE at < ?", (time.time() - self.max_age,))
        db.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
            "(PARTITION BY route, verdict, replay ORDER BY id DESC) AS rn FROM samples) WHERE rn > ?)",
            (self.max_samples,))
        db.execute(
            "DELETE FROM fields WHERE rowid IN (SELECT rowid FROM (SELECT rowid, ROW_NUMBER() OVER "
            "(PARTITION BY route ORDER BY counted + ignored DESC) AS rn FROM fields) WHERE rn > ?)",
            (MAX_FIELDS_PER_ROUTE,))

    # -- reading (admin API and CLI, from a worker thread) ---------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        db = self._connect()
        db.row_factory = sqlite3.Row
        return db


def sample_summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"], "at": row["at"], "route": row["route"], "method": row["method"], "path": row["target"],
        "verdict": row["verdict"], "reason": row["reason"], "trace_id": row["trace_id"],
        "primary": {"backend": row["primary_backend"], "status": row["primary_status"], "ms": row["primary_ms"]},
        "shadow": {"backend": row["shadow_backend"], "status": row["shadow_status"], "ms": row["shadow_ms"]},
        "differences": json.loads(row["differences"]), "replay": bool(row["replay"]),
    }


def _body_text(body: bytes | None) -> dict[str, Any]:
    if body is None:
        return {"text": None, "base64": None, "size": 0}
    try:
        return {"text": body.decode("utf-8"), "size": len(body)}
    except UnicodeDecodeError:
        import base64

        return {"text": None, "base64": base64.b64encode(body).decode(), "size": len(body)}


def sample_detail(row: sqlite3.Row) -> dict[str, Any]:
    out = sample_summary(row)
    out["ignored"] = json.loads(row["ignored"])
    out["request"] = {"method": row["method"], "target": row["target"],
                      "headers": json.loads(row["request_headers"]), "body": _body_text(row["request_body"])}
    out["primary"].update(headers=json.loads(row["primary_headers"]), body=_body_text(row["primary_body"]),
                          truncated=bool(row["primary_truncated"]))
    out["shadow"].update(headers=json.loads(row["shadow_headers"]), body=_body_text(row["shadow_body"]),
                         truncated=bool(row["shadow_truncated"]))
    return out


def list_samples(db: sqlite3.Connection, route: str | None = None, verdict: str | None = None,
                 limit: int = 50, before: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM samples WHERE 1=1"
    args: list[Any] = []
    if route:
        sql += " AND route = ?"
        args.append(route)
    if verdict:
        sql += " AND verdict = ?"
        args.append(verdict)
    if before:
        sql += " AND id < ?"
        args.append(before)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [sample_summary(r) for r in db.execute(sql, args)]


def get_sample(db: sqlite3.Connection, sample_id: int) -> dict[str, Any] | None:
    row = db.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
    return sample_detail(row) if row else None


def report(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Per route: verdict counts, skips by reason, top differing fields, learned noise (with rates)."""
    out: dict[str, dict[str, Any]] = {}

    def route(name: str) -> dict[str, Any]:
        return out.setdefault(name, {"verdicts": {}, "skipped": {}, "fields": [], "noise": [], "noise_samples": 0})

    for r in db.execute("SELECT route, verdict, n FROM verdicts"):
        route(r["route"])["verdicts"][r["verdict"]] = r["n"]
    for r in db.execute("SELECT route, reason, n FROM skips"):
        route(r["route"])["skipped"][r["reason"]] = r["n"]
    for r in db.execute("SELECT route, field, kind, counted, ignored, last_id FROM fields "
                        "ORDER BY counted DESC, ignored DESC"):
        fields = route(r["route"])["fields"]
        if len(fields) < 20:
            fields.append({"field": r["field"], "kind": r["kind"], "count": r["counted"], "ignored": r["ignored"],
                           "last_sample": r["last_id"]})
    for r in db.execute("SELECT route, n FROM noise_samples"):
        route(r["route"])["noise_samples"] = r["n"]
    for r in db.execute("SELECT route, field, differed FROM noise ORDER BY differed DESC"):
        entry = route(r["route"])
        rate = 100.0 * r["differed"] / entry["noise_samples"] if entry["noise_samples"] else 0.0
        entry["noise"].append({"field": r["field"], "differed": r["differed"], "rate": round(rate, 2)})
    for entry in out.values():
        v = entry["verdicts"]
        total = sum(v.values())
        entry["compared"] = total
        entry["rates"] = {k: round(100.0 * n / total, 2) for k, n in v.items()} if total else {}
    return out


def learned_noise(db: sqlite3.Connection) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in db.execute("SELECT route, field FROM noise"):
        out.setdefault(r["route"], set()).add(r["field"])
    return out
