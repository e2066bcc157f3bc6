"""The embedded trace store: spans of the gateway and of the services, in SQLite beside routes.yaml (traces.db).

Writes never happen on the request path. ``put`` appends to an in-memory queue (bounded: beyond ``QUEUE_LIMIT``
items the item is dropped and counted) and returns; a writer thread wakes every ``INTERVAL`` seconds, turns the
queued items into rows, writes them in one transaction and then evicts the oldest traces beyond ``max_traces``
(routes.yaml ``store.max_traces``), so the file never holds more than that many traces whatever the traffic.

An item is any object with ``rows()`` and ``export``: the gateway's own spans (whose attributes are only built
here, off the hot path) or a ``Received`` batch decoded from OTLP. Listeners registered with ``add_listener`` get
the rows of every batch whose items have ``export`` set, in the writer thread (the gateway uses that to send spans
on to an external collector).

Tables: ``spans`` (one row per span), ``traces`` (one row per trace: time span, root, route, error flag, arrival
order for eviction) and ``trace_services``. A trace's root is the span without a parent; until it arrives (or
when the gateway continued a caller's trace) the earliest span stands in for it.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("strangler.traces")

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL, service TEXT NOT NULL, kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT 'unset',
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, error INTEGER NOT NULL DEFAULT 0,
    root_name TEXT, root_service TEXT, root_start INTEGER, has_root INTEGER NOT NULL DEFAULT 0, route TEXT,
    shadow INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_seq ON traces(seq);
CREATE INDEX IF NOT EXISTS traces_start ON traces(start_ns);
CREATE TABLE IF NOT EXISTS trace_services (
    trace_id TEXT NOT NULL, service TEXT NOT NULL, PRIMARY KEY (trace_id, service)
) WITHOUT ROWID;
"""

QUEUE_LIMIT = 50_000
INTERVAL = 0.1
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")


class Row(NamedTuple):
    """One span as stored: ids in lowercase hex, times in Unix nanoseconds, ``status`` unset | ok | error."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: str


# The upsert keeps the earliest start, the latest end, any error, the first route seen, and as root the
# parentless span (else the earliest one). SET expressions read the row's old values (SQLite upsert semantics).
_UPSERT_TRACE = """
INSERT INTO traces (trace_id, seq, start_ns, end_ns, error, root_name, root_service, root_start, has_root, route,
                    shadow)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET
    start_ns = min(start_ns, excluded.start_ns),
    end_ns = max(end_ns, excluded.end_ns),
    error = max(error, excluded.error),
    root_name = CASE WHEN excluded.has_root > has_root
                       OR (excluded.has_root = has_root AND excluded.root_start < root_start)
                     THEN excluded.root_name ELSE root_name END,
    root_service = CASE WHEN excluded.has_root > has_root
                          OR (excluded.has_root = has_root AND excluded.root_start < root_start)
                        THEN excluded.root_service ELSE root_service END,
    root_start = CASE WHEN excluded.has_root > has_root
                        OR (excluded.has_root = has_root AND excluded.root_start < root_start)
                      THEN excluded.root_start ELSE root_start END,
    has_root = max(has_root, excluded.has_root),
    route = coalesce(route, excluded.route),
    shadow = max(shadow, excluded.shadow)
"""


class Received:
    """Spans that arrived over OTLP; ``export`` is False for spans this gateway sent itself (a relay loop)."""

    __slots__ = ("spans", "export")

    def __init__(self, spans: list[Row], export: bool = True) -> None:
        self.spans = spans
        self.export = export

    def rows(self) -> list[Row]:
        return self.spans


class TraceStore:
    def __init__(self, path: Path, *, max_traces: int = 2000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_traces = max(1, max_traces)
        self.dropped = 0
        self.written = 0
        self._pending: collections.deque[Any] = collections.deque()
        self._queued = 0
        self._done = 0
        self._listeners: list[Callable[[list[Row]], None]] = []
        self._wake = threading.Event()
        self._closing = False
        db = self._connect()
        db.executescript(SCHEMA)
        self._seq = db.execute("SELECT coalesce(max(seq), 0) FROM traces").fetchone()[0]
        db.close()
        self._thread = threading.Thread(target=self._writer, name="strangler-traces", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def reader(self) -> sqlite3.Connection:
        return self._connect()

    def add_listener(self, fn: Callable[[list[Row]], None]) -> None:
        """``fn(rows)`` is called in the writer thread with the exportable rows of each batch."""
        self._listeners.append(fn)

    # -- writing (event loop; never blocks) ------------------------------------------------------------------------

    def put(self, item: Any) -> bool:
        if len(self._pending) >= QUEUE_LIMIT:
            self.dropped += 1
            return False
        self._pending.append(item)
        self._queued += 1
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is written (tests, the admin API's reads, shutdown)."""
        target = self._queued
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def close(self) -> None:
        self.flush()
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=5.0)

    # -- the writer thread -----------------------------------------------------------------------------------------

    def _writer(self) -> None:
        db = self._connect()
        try:
            while True:
                self._wake.wait(INTERVAL)
                self._wake.clear()
                batch = self._drain()
                if batch:
                    self._write_batch(db, batch)
                    self._done += len(batch)
                elif self._closing:
                    return
        finally:
            db.close()

    def _drain(self) -> list[Any]:
        pending = self._pending
        batch = []
        # popleft is atomic: the event loop may append while we take.
        while pending and len(batch) < 10_000:
            batch.append(pending.popleft())
        return batch

    def _write_batch(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        rows: list[Row] = []
        exported: list[Row] = []
        for item in batch:
            try:
                item_rows = item.rows()
            except Exception:  # one malformed item must not lose the batch
                log.exception("cannot convert spans for the trace store")
                continue
            rows.extend(item_rows)
            if item.export:
                exported.extend(item_rows)
        if exported:
            for listener in self._listeners:
                try:
                    listener(exported)
                except Exception:  # an exporter's bug must not stop the store
                    log.exception("trace listener failed")
        if not rows:
            return
        try:
            self._write_rows(db, rows)
            self.written += len(rows)
        except sqlite3.Error:
            log.exception("trace store write failed; %d span(s) lost", len(rows))
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _write_rows(self, db: sqlite3.Connection, rows: list[Row]) -> None:
        traces: dict[str, list[Any]] = {}
        services: set[tuple[str, str]] = set()
        for r in rows:
            t = traces.get(r.trace_id)
            is_root = not r.parent_span_id
            if t is None:
                self._seq += 1
                traces[r.trace_id] = [r.trace_id, self._seq, r.start_ns, r.end_ns, int(r.status == "error"),
                                      r.name, r.service, r.start_ns, int(is_root),
                                      r.attributes.get("strangler.route"), int(_is_shadow(r))]
            else:
                t[2] = min(t[2], r.start_ns)
                t[3] = max(t[3], r.end_ns)
                t[4] = max(t[4], int(r.status == "error"))
                if (is_root and not t[8]) or (bool(is_root) == bool(t[8]) and r.start_ns < t[7]):
                    t[5], t[6], t[7], t[8] = r.name, r.service, r.start_ns, int(is_root)
                if t[9] is None:
                    t[9] = r.attributes.get("strangler.route")
                if not t[10] and _is_shadow(r):
                    t[10] = 1
            services.add((r.trace_id, r.service))
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(r.trace_id, r.span_id, r.parent_span_id, r.name, r.service, r.kind, r.start_ns,
                         r.end_ns, json.dumps(r.attributes, default=str), r.status) for r in rows])
        db.executemany(_UPSERT_TRACE, traces.values())
        db.executemany("INSERT OR IGNORE INTO trace_services VALUES (?, ?)", services)
        self._evict(db)
        db.execute("COMMIT")

    def _evict(self, db: sqlite3.Connection) -> None:
        count = db.execute("SELECT count(*) FROM traces").fetchone()[0]
        excess = count - self.max_traces
        if excess <= 0:
            return
        oldest = "SELECT trace_id FROM traces ORDER BY seq LIMIT ?"
        db.execute(f"DELETE FROM spans WHERE trace_id IN ({oldest})", (excess,))
        db.execute(f"DELETE FROM trace_services WHERE trace_id IN ({oldest})", (excess,))
        db.execute(f"DELETE FROM traces WHERE trace_id IN ({oldest})", (excess,))


def _is_shadow(r: Row) -> bool:
    return r.attributes.get("strangler.shadow") is True


# -- reading (admin API, any thread, own connection) -----------------------------------------------------------


def list_traces(db: sqlite3.Connection, *, route: str | None = None, status: str | None = None,
                min_ms: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent traces, newest first: one summary per trace."""
    where: list[str] = []
    args: list[Any] = []
    if route:
        where.append("route = ?")
        args.append(route)
    if status in ("error", "ok"):
        where.append("error = ?")
        args.append(1 if status == "error" else 0)
    if min_ms:
        where.append("end_ns - start_ns >= ?")
        args.append(int(min_ms * 1e6))
    sql = ("SELECT trace_id, root_name, root_service, route, start_ns, end_ns, error, shadow, "
           "(SELECT count(*) FROM spans s WHERE s.trace_id = t.trace_id), "
           "(SELECT group_concat(service, ',') FROM trace_services ts WHERE ts.trace_id = t.trace_id) "
           "FROM traces t" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY start_ns DESC LIMIT ?")
    out = []
    for tid, root, root_service, rte, start, end, error, shadow, spans, services in db.execute(sql, (*args, limit)):
        names = sorted((services or "").split(",")) if services else []
        out.append({"trace_id": tid, "root": root, "root_service": root_service, "route": rte,
                    "services": names, "service_count": len(names), "span_count": spans,
                    "duration_ms": round((end - start) / 1e6, 3), "status": "error" if error else "ok",
                    "has_shadow": bool(shadow),
                    "start_ns": start, "at": start / 1e9})
    return out


def get_trace(db: sqlite3.Connection, trace_id: str) -> dict[str, Any] | None:
    rows = db.execute("SELECT span_id, parent_span_id, name, service, kind, start_ns, end_ns, attributes, status "
                      "FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id", (trace_id,)).fetchall()
    if not rows:
        return None
    spans = [{"span_id": sid, "parent_span_id": parent or None, "name": name, "service": service, "kind": kind,
              "start_ns": start, "end_ns": end, "attributes": json.loads(attrs), "status": status}
             for sid, parent, name, service, kind, start, end, attrs, status in rows]
    return {"trace_id": trace_id, "spans": spans}


def count_traces(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM traces").fetchone()[0])
