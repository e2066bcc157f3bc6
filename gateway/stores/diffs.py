"""The comparison store: counters and capped samples of shadow comparisons, in SQLite beside routes.yaml.

The tables and their bounds are described in :mod:`gateway.stores.diff_schema`. ``DiffStore`` owns the writer;
its read methods run the queries of :mod:`gateway.stores.diff_queries`, each on a fresh connection.

Samples are rate-limited as they are written: at most ``SAMPLES_PER_SECOND`` per route and verdict (but always
one for a field seen for the first time), since only the newest ``max_samples`` are kept anyway and 100% shadow
on a busy route would otherwise write and delete thousands of rows a second. Counters count everything; they
are added up per batch (skips in memory, pushed every ``SKIP_FLUSH`` seconds) and written once per key.

Writes never happen on the request path: ``put`` appends to a bounded in-memory queue (when it is full the record
is dropped and counted in ``dropped``) and a writer thread commits them in batches of up to ``BATCH``, enforcing
the bounds in the same transaction, for exactly the routes and verdicts the batch touched. ``flush`` waits until
everything put so far is committed: the bounds hold whenever it returns. Reads (admin API, CLI) use their own
connection (:meth:`DiffStore.reader`); WAL mode lets them run beside the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.stores import sqlite
from gateway.stores.diff_queries import get_sample, list_samples, noise_counts, replayable, report
from gateway.stores.diff_schema import (
    MAX_FIELDS_PER_ROUTE,
    MAX_NOISE_FIELDS,
    SCHEMA,
    STORED_BODY,
    latency_bucket,
    migrate,
)
from observability.batches import BatchWriter

SAMPLES_PER_SECOND = 10     # stored samples per route and verdict per second; counters count everything
SKIP_FLUSH = 0.5            # seconds between two writes of the skip counters
QUEUE_LIMIT = 10_000
BATCH = 200
# After the first record of a batch the writer waits this long for more before committing: one transaction
# costs about as much as a hundred inserts, so at a few hundred comparisons a second (a slow shadow target drains
# its queue steadily) a commit per record would cost the gateway more CPU than the comparisons themselves.
LINGER = 0.1


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


class _BatchCounts:
    """Counter deltas of one batch, written with one upsert per key."""

    def __init__(self) -> None:
        self.verdicts: dict[tuple[str, str], int] = {}
        self.fields: dict[tuple[str, str, str, str], int] = {}
        self.last_ids: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str, int], int] = {}
        self.skips: dict[tuple[str, str], int] = {}
        self.examples: set[tuple[str, str, str]] = set()

    def add_record(self, r: Record, sample_id: int | None) -> None:
        key = (r.route, r.verdict)
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        for diffs, column in ((r.differences, "counted"), (r.ignored, "ignored")):
            for name, kind in {(d.get("field", d.get("path", "?")), d.get("kind", "changed")) for d in diffs}:
                fkey = (r.route, name, kind, column)
                self.fields[fkey] = self.fields.get(fkey, 0) + 1
                if sample_id is not None:
                    self.last_ids[(r.route, name, kind)] = sample_id
                    if column == "counted":
                        self.examples.add((r.route, name, kind))
        sides = (("extracted", r.primary_ms), ("legacy", r.shadow_ms)) if r.reverse else \
            (("legacy", r.primary_ms), ("extracted", r.shadow_ms))
        for side, ms in sides:
            if ms is not None and r.verdict != "error":
                lkey = (r.route, side, latency_bucket(ms))
                self.latency[lkey] = self.latency.get(lkey, 0) + 1

    def write(self, db: sqlite3.Connection) -> None:
        for (route, verdict), n in self.verdicts.items():
            db.execute("INSERT INTO verdicts VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                       (route, verdict, n))
        for (route, name, kind, column), n in self.fields.items():
            last_id = self.last_ids.get((route, name, kind))
            db.execute(f"INSERT INTO fields (route, field, kind, {column}, last_id) VALUES (?, ?, ?, ?, ?) "
                       f"ON CONFLICT DO UPDATE SET {column} = {column} + excluded.{column}, "
                       f"last_id = COALESCE(excluded.last_id, last_id)", (route, name, kind, n, last_id))
        for (route, side, bucket), n in self.latency.items():
            db.execute("INSERT INTO latency VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                       (route, side, bucket, n))
        for (route, reason), n in self.skips.items():
            db.execute("INSERT INTO skips VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                       (route, reason, n))


class DiffStore(BatchWriter):
    def __init__(self, path: Path, *, max_samples: int = 200, max_age: float = 7 * 86400.0,
                 samples_per_second: int = SAMPLES_PER_SECOND) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.samples_per_second = samples_per_second
        self.max_samples = max_samples
        self.max_age = max_age
        init = self._connect()
        init.executescript(SCHEMA)
        migrate(init)
        init.close()
        self._skips: dict[tuple[str, str], int] = {}
        self._skip_lock = threading.Lock()
        self._skips_pushed = 0.0
        # Writer-thread state: its connection, samples written this second per route and verdict, fields that
        # have an example.
        self._db: sqlite3.Connection | None = None
        self._sampled: dict[tuple[str, str], int] = {}
        self._sampled_second = 0
        self._has_example: set[tuple[str, str, str]] = set()
        # Group commit: a record waits at most LINGER for others to share its transaction.
        super().__init__("strangler-diffstore", interval=LINGER, limit=QUEUE_LIMIT, max_batch=BATCH)

    def _connect(self) -> sqlite3.Connection:
        return sqlite.connect(self.path)

    # -- writing (never blocks) ------------------------------------------------------------------------------------

    def skip(self, route: str, reason: str) -> None:
        """Count a skipped copy. Skips can come thousands per second (a dead target, a full queue), so they are
        added up in memory and written as one delta per route and reason every ``SKIP_FLUSH`` seconds."""
        key = (route, reason)
        with self._skip_lock:
            self._skips[key] = self._skips.get(key, 0) + 1
        now = time.monotonic()
        if now - self._skips_pushed >= SKIP_FLUSH:
            self.push_skips(now)

    def push_skips(self, now: float | None = None) -> None:
        with self._skip_lock:
            skips, self._skips = self._skips, {}
        self._skips_pushed = time.monotonic() if now is None else now
        if skips:
            self.put(("skips", skips))

    def noise_sample(self, route: str, fields: frozenset[str]) -> None:
        self.put(("noise", route, json.dumps(sorted(fields))))

    @property
    def pending(self) -> int:
        """Records put and not yet committed."""
        return self._queued - self._done

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything put so far is committed (and the bounds enforced); False on timeout."""
        self.push_skips()
        return super().flush(timeout)

    # -- reading (admin API and CLI, from a worker thread) ---------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        db = self._connect()
        db.row_factory = sqlite3.Row
        return db

    def _read(self, fn: Any, *args: Any) -> Any:
        """Run one query on a fresh connection, after what was queued so far is committed."""
        self.flush(timeout=0.5)
        db = self.reader()
        try:
            return fn(db, *args)
        finally:
            db.close()

    def list_samples(self, route: str | None = None, verdict: str | None = None, limit: int = 50,
                     before: int | None = None) -> list[dict[str, Any]]:
        return self._read(list_samples, route, verdict, limit, before)  # type: ignore[no-any-return]

    def get_sample(self, sample_id: int) -> dict[str, Any] | None:
        return self._read(get_sample, sample_id)  # type: ignore[no-any-return]

    def replayable(self, route: str, verdict: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest recorded (not replayed) comparisons of a route, whole, for ``strangler replay``."""
        return self._read(replayable, route, verdict, limit)  # type: ignore[no-any-return]

    def report(self) -> dict[str, dict[str, Any]]:
        return self._read(report)  # type: ignore[no-any-return]

    def noise_counts(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        db = self.reader()
        try:
            return noise_counts(db)
        finally:
            db.close()

    # -- the writer thread ------------------------------------------------------------------------------------------

    # -- the writer thread -----------------------------------------------------------------------------------------

    def run_writer(self) -> None:
        db = self._db = self._connect()
        self._has_example = {(r, f, k) for r, f, k in db.execute(
            "SELECT route, field, kind FROM fields WHERE counted > 0 AND last_id IS NOT NULL")}
        try:
            self.drain_forever()
        finally:
            db.close()

    def write_batch(self, batch: list[Any]) -> None:
        assert self._db is not None
        self._write(self._db, batch)

    def _write(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        """One transaction per batch. Counters are added up over the batch first and written once per key, so
        a busy route costs a handful of statements per batch, not several per comparison."""
        touched: set[tuple[str, str, int]] = set()
        counts = _BatchCounts()
        db.execute("BEGIN")
        try:
            for item in batch:
                if isinstance(item, Record):
                    sample_id = self._insert(db, item, counts) if self._keep_sample(item) else None
                    if sample_id is not None:
                        touched.add((item.route, item.verdict, int(item.replay)))
                    if not item.replay:
                        counts.add_record(item, sample_id)
                elif item[0] == "skips":
                    for key, n in item[1].items():
                        counts.skips[key] = counts.skips.get(key, 0) + n
                elif item[0] == "noise":
                    self._noise(db, item[1], json.loads(item[2]))
            counts.write(db)
            self._has_example.update(counts.examples)
            self._retain(db, touched)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _keep_sample(self, r: Record) -> bool:
        """Whether to store this comparison as a sample (counters always count it). At most
        ``SAMPLES_PER_SECOND`` per route and verdict, so 100% shadow on a busy route does not churn the file,
        except that a field seen for the first time always gets its example."""
        if r.replay:
            return True
        second = int(time.monotonic())
        if second != self._sampled_second:
            self._sampled_second = second
            self._sampled.clear()
        key = (r.route, r.verdict)
        taken = self._sampled.get(key, 0)
        new_field = any((r.route, d.get("field", "?"), d.get("kind", "changed")) not in self._has_example
                        for d in r.differences)
        if taken >= self.samples_per_second and not new_field:
            return False
        self._sampled[key] = taken + 1
        return True

    def _insert(self, db: sqlite3.Connection, r: Record, counts: _BatchCounts) -> int | None:
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
        return cur.lastrowid

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
