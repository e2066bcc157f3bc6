"""The comparison store: counters and capped samples of shadow comparisons, in SQLite beside routes.yaml.

Model
-----
Two kinds of data, with different lifetimes:

* **Counters** are small and kept for good: verdicts per route, skips per route and reason, per-field difference
  counts (at most ``MAX_FIELDS_PER_ROUTE`` per route, the least frequent go first), learned-noise counts (at most
  ``MAX_NOISE_FIELDS`` per route) and a latency histogram per route and side (log buckets, about 9% wide).
* **Samples** are whole comparisons (request, both answers, differences), capped twice: each body is cut at
  ``STORED_BODY`` bytes (flagged ``*_truncated``), and retention keeps the newest ``max_samples`` per route,
  verdict and kind (live or replay), plus the latest example of each counted field (so the report's
  ``strangler diff ID`` links keep working), and nothing older than ``max_age``.

So the file is bounded by ``routes x (verdicts x 2 x max_samples + MAX_FIELDS_PER_ROUTE) x (3 x STORED_BODY +
headers)`` whatever the traffic; in practice samples are a few KiB and the file stays at a few MiB.

Writes never happen on the request path: ``put`` appends to a bounded in-memory queue (when it is full the record
is dropped and counted in ``dropped``) and a writer thread commits them in batches of up to ``BATCH``, enforcing
the bounds in the same transaction, for exactly the routes and verdicts the batch touched. ``flush`` waits until
everything put so far is committed: the bounds hold whenever it returns. Reads (admin API, CLI) use their own
connection; WAL mode lets them run beside the writer.
"""

from __future__ import annotations

import json
import math
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
    replay INTEGER NOT NULL DEFAULT 0,
    request_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS samples_kind ON samples(route, verdict, replay, id);
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
CREATE TABLE IF NOT EXISTS latency (
    route TEXT, side TEXT, bucket INTEGER, n INTEGER NOT NULL, PRIMARY KEY (route, side, bucket)
);
"""

MAX_FIELDS_PER_ROUTE = 500
MAX_NOISE_FIELDS = 500
STORED_BODY = 256 * 1024
QUEUE_LIMIT = 10_000
BATCH = 200
REDACTED = "[redacted]"

# A field is noise once two answers of legacy to the same request disagreed on it at least NOISE_MIN_DIFFERED
# times and in at least NOISE_MIN_RATE of the double-checked requests. One disagreement is not enough: a write
# landing between the two reads changes `count` once, and that must not hide a real mismatch forever.
NOISE_MIN_DIFFERED = 2
NOISE_MIN_RATE = 0.10

# Latency histogram: bucket b holds values in [2**(b/8), 2**((b+1)/8)) ms, so a quantile is known within 9%.
_BUCKETS_PER_OCTAVE = 8


def is_noise(differed: int, samples: int) -> bool:
    return samples > 0 and differed >= NOISE_MIN_DIFFERED and differed >= NOISE_MIN_RATE * samples


def latency_bucket(ms: float) -> int:
    return math.floor(math.log2(max(ms, 0.001)) * _BUCKETS_PER_OCTAVE)


def bucket_upper_ms(bucket: int) -> float:
    return 2.0 ** ((bucket + 1) / _BUCKETS_PER_OCTAVE)


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
    request_truncated: bool = False
    primary_headers: list[tuple[str, str]] = field(default_factory=list)
    primary_body: bytes | None = None
    primary_truncated: bool = False
    shadow_headers: list[tuple[str, str]] = field(default_factory=list)
    shadow_body: bytes | None = None
    shadow_truncated: bool = False
    at: float = field(default_factory=time.time)
    replay: bool = False
    reverse: bool = False     # the primary was the extracted side (stage extracted with reverse_shadow)


def _capped(body: bytes | None) -> tuple[bytes | None, bool]:
    if body is None or len(body) <= STORED_BODY:
        return body, False
    return body[:STORED_BODY], True


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
        _migrate(init)
        init.close()
        # Items put but not yet committed; flush() waits for zero. A counter under a condition, not an Event,
        # so that a put racing with the end of a batch can never make flush() return early.
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._writer, name="strangler-diffstore", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    # -- writing (any thread, never blocks) ------------------------------------------------------------------------

    def put(self, item: Record | tuple[str, ...]) -> bool:
        with self._done:
            self._pending += 1
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            self._finished(1)
            return False

    def skip(self, route: str, reason: str) -> None:
        self.put(("skip", route, reason))

    def noise_sample(self, route: str, fields: frozenset[str]) -> None:
        self.put(("noise", route, json.dumps(sorted(fields))))

    @property
    def pending(self) -> int:
        return self._pending

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far is committed (and the bounds enforced); False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5.0)

    # -- reading (admin API and CLI, from a worker thread) ---------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        db = self._connect()
        db.row_factory = sqlite3.Row
        return db

    # -- the writer thread ------------------------------------------------------------------------------------------

    def _finished(self, n: int) -> None:
        with self._done:
            self._pending -= n
            if self._pending <= 0:
                self._done.notify_all()

    def _writer(self) -> None:
        db = self._connect()
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._write(db, batch)
            except sqlite3.Error:
                self.dropped += len(batch)
            finally:
                self._finished(len(batch))
            if stop:
                break
        db.close()

    def _write(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        touched: set[tuple[str, str, int]] = set()
        db.execute("BEGIN")
        try:
            for item in batch:
                if isinstance(item, Record):
                    self._insert(db, item)
                    touched.add((item.route, item.verdict, int(item.replay)))
                elif item[0] == "skip":
                    db.execute("INSERT INTO skips VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1",
                               (item[1], item[2]))
                elif item[0] == "noise":
                    self._noise(db, item[1], json.loads(item[2]))
            self._retain(db, touched)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, db: sqlite3.Connection, r: Record) -> None:
        request_body, request_cut = _capped(r.request_body)
        primary_body, primary_cut = _capped(r.primary_body)
        shadow_body, shadow_cut = _capped(r.shadow_body)
        cur = db.execute(
            "INSERT INTO samples (at, route, method, target, verdict, reason, trace_id, primary_backend, "
            "shadow_backend, primary_status, shadow_status, primary_ms, shadow_ms, differences, ignored, "
            "request_headers, request_body, primary_headers, primary_body, primary_truncated, shadow_headers, "
            "shadow_body, shadow_truncated, replay, request_truncated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.at, r.route, r.method, r.target, r.verdict, r.reason, r.trace_id, r.primary_backend,
             r.shadow_backend, r.primary_status, r.shadow_status, r.primary_ms, r.shadow_ms,
             json.dumps(r.differences, default=str), json.dumps(r.ignored, default=str),
             json.dumps(r.request_headers), request_body, json.dumps(r.primary_headers), primary_body,
             int(r.primary_truncated or primary_cut), json.dumps(r.shadow_headers), shadow_body,
             int(r.shadow_truncated or shadow_cut), int(r.replay), int(r.request_truncated or request_cut)))
        sample_id = cur.lastrowid
        if r.replay:
            return
        db.execute("INSERT INTO verdicts VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (r.route, r.verdict))
        for diffs, column in ((r.differences, "counted"), (r.ignored, "ignored")):
            for d in {(d.get("field", d.get("path", "?")), d.get("kind", "changed")) for d in diffs}:
                db.execute(f"INSERT INTO fields (route, field, kind, {column}, last_id) VALUES (?, ?, ?, 1, ?) "
                           f"ON CONFLICT DO UPDATE SET {column} = {column} + 1, last_id = excluded.last_id",
                           (r.route, d[0], d[1], sample_id))
        sides = (("extracted", r.primary_ms), ("legacy", r.shadow_ms)) if r.reverse else \
            (("legacy", r.primary_ms), ("extracted", r.shadow_ms))
        for side, ms in sides:
            if ms is not None and r.verdict != "error":
                db.execute("INSERT INTO latency VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1",
                           (r.route, side, latency_bucket(ms)))

    def _noise(self, db: sqlite3.Connection, route: str, fields: list[str]) -> None:
        db.execute("INSERT INTO noise_samples VALUES (?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (route,))
        for f in fields:
            db.execute("INSERT INTO noise VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET differed = differed + 1",
                       (route, f))

    def _retain(self, db: sqlite3.Connection, touched: set[tuple[str, str, int]]) -> None:
        """Enforce the bounds for what this batch touched: ``max_samples`` per route, verdict and kind (besides
        the latest example of each counted field), field and noise counters per route, and ``max_age``."""
        db.execute("DELETE FROM samples WHERE at < ?", (time.time() - self.max_age,))
        # Fields first: a field trimmed away no longer holds its example sample.
        for route in {t[0] for t in touched}:
            _trim(db, "fields", route, "counted + ignored", MAX_FIELDS_PER_ROUTE)
            _trim(db, "noise", route, "differed", MAX_NOISE_FIELDS)
        for route, verdict, replay in touched:
            db.execute(
                "DELETE FROM samples WHERE route = ? AND verdict = ? AND replay = ? AND id <= "
                "(SELECT id FROM samples WHERE route = ? AND verdict = ? AND replay = ? ORDER BY id DESC "
                "LIMIT 1 OFFSET ?) AND id NOT IN (SELECT last_id FROM fields WHERE route = ? AND counted > 0 "
                "AND last_id IS NOT NULL)",
                (route, verdict, replay, route, verdict, replay, self.max_samples, route))


def _trim(db: sqlite3.Connection, table: str, route: str, weight: str, keep: int) -> None:
    """Keep the ``keep`` heaviest rows of ``table`` for ``route``."""
    (n,) = db.execute(f"SELECT COUNT(*) FROM {table} WHERE route = ?", (route,)).fetchone()
    if n > keep:
        db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE route = ? "
                   f"ORDER BY {weight} ASC, rowid ASC LIMIT ?)", (route, n - keep))


def _migrate(db: sqlite3.Connection) -> None:
    """Stores written by an earlier version lack newer columns; add them in place."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
    if "request_truncated" not in columns:
        db.execute("ALTER TABLE samples ADD COLUMN request_truncated INTEGER NOT NULL DEFAULT 0")



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
                      "headers": json.loads(row["request_headers"]), "body": _body_text(row["request_body"]),
                      "truncated": bool(row["request_truncated"])}
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
    """Per route: verdict counts and rates, skips by reason, top differing fields, noise fields with their rates
    (``learned`` when they pass the noise threshold), and p50/p99 of both sides over the compared requests."""
    out: dict[str, dict[str, Any]] = {}

    def route(name: str) -> dict[str, Any]:
        return out.setdefault(name, {"verdicts": {}, "skipped": {}, "fields": [], "noise": [], "noise_samples": 0,
                                     "compared_latency": {}})

    for r in db.execute("SELECT route, verdict, n FROM verdicts"):
        route(r["route"])["verdicts"][r["verdict"]] = r["n"]
    for r in db.execute("SELECT route, reason, n FROM skips"):
        route(r["route"])["skipped"][r["reason"]] = r["n"]
    for r in db.execute("SELECT route, field, kind, counted, ignored, last_id FROM fields "
                        "ORDER BY counted DESC, ignored DESC, field"):
        fields = route(r["route"])["fields"]
        if len(fields) < 20:
            fields.append({"field": r["field"], "kind": r["kind"], "count": r["counted"], "ignored": r["ignored"],
                           "last_sample": r["last_id"]})
    for r in db.execute("SELECT route, n FROM noise_samples"):
        route(r["route"])["noise_samples"] = r["n"]
    for r in db.execute("SELECT route, field, differed FROM noise ORDER BY differed DESC, field"):
        entry = route(r["route"])
        samples = entry["noise_samples"]
        rate = 100.0 * r["differed"] / samples if samples else 0.0
        entry["noise"].append({"field": r["field"], "differed": r["differed"], "rate": round(rate, 2),
                               "learned": is_noise(r["differed"], samples)})
    histograms: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for r in db.execute("SELECT route, side, bucket, n FROM latency ORDER BY bucket"):
        histograms.setdefault((r["route"], r["side"]), []).append((r["bucket"], r["n"]))
    for (name, side), buckets in histograms.items():
        route(name)["compared_latency"][side] = _quantiles(buckets)
    for entry in out.values():
        v = entry["verdicts"]
        total = sum(v.values())
        entry["compared"] = total
        entry["rates"] = {k: round(100.0 * n / total, 2) for k, n in v.items()} if total else {}
    return out


def _quantiles(buckets: list[tuple[int, int]]) -> dict[str, Any]:
    """p50 and p99 from a sorted histogram, as the upper edge of the bucket that holds them."""
    total = sum(n for _, n in buckets)
    out: dict[str, Any] = {"requests": total}
    for name, q in (("p50_ms", 0.50), ("p99_ms", 0.99)):
        rank = q * total
        seen = 0
        for bucket, n in buckets:
            seen += n
            if seen >= rank:
                out[name] = round(bucket_upper_ms(bucket), 3)
                break
    return out


def noise_counts(db: sqlite3.Connection) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Double-checked requests per route, and per route how often each field differed between legacy's answers."""
    samples = {r[0]: r[1] for r in db.execute("SELECT route, n FROM noise_samples")}
    fields: dict[str, dict[str, int]] = {}
    for r in db.execute("SELECT route, field, differed FROM noise"):
        fields.setdefault(r[0], {})[r[1]] = r[2]
    return samples, fields
