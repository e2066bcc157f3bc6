"""The embedded trace store: spans of the gateway and of the services, in SQLite beside routes.yaml (traces.db).

Writes never happen on the request path (``observability.batches.BatchWriter``). ``put`` appends to an
in-memory queue (bounded: beyond ``QUEUE_LIMIT`` items the item is dropped and counted) and returns; a writer
thread wakes every ``INTERVAL`` seconds and writes
everything queued in one transaction, then evicts the oldest traces beyond ``max_traces`` (routes.yaml
``store.max_traces``), so the file never holds more than that many traces whatever the traffic.

Layout, shaped by what is written most (one gateway request per client request, at full request rate):

- ``traces``: one row per trace, in arrival order (``seq``; eviction and "recent" both follow it), keyed by the
  low 63 bits of the trace id (``tkey``, an integer: cheap to index). When the trace went through this gateway,
  the row also holds the gateway's request as one packed text value (route, stage, status, attempts ...,
  separated by ASCII unit/record separators): its SERVER and CLIENT spans and their attributes are rebuilt from
  it when read (``gateway_rows``), so a request costs one short row: no JSON, no per-span rows.
- ``span_sets``: every other span (the services', received over OTLP; the gateway's shadow exchanges), one row per
  trace and service and batch, with the spans as JSON and a summary (time span, error, shadow, count, root) in
  columns so listing traces needs no JSON.

The store only ever appends to a trace. A client may send a ``traceparent`` naming a trace the gateway recorded
before (the id is in every ``X-Trace-Id``): its request joins that trace, as W3C Trace Context intends, but must
not erase it. So a gateway request whose trace already holds one (only possible when the client chose the trace
id: the gateway's own ids are random 128-bit numbers) is written as a span set beside it, never over it.

Items queued are either a ``RequestSpan.snapshot()`` tuple (the gateway's request, packed into its ``traces``
row by ``pack_request`` here, never on the request path) or objects with ``rows()`` and ``export`` (shadow spans,
a ``Received`` OTLP batch). Listeners registered with ``add_listener`` get the rows of every batch whose items have
``export`` set, in the writer thread (the gateway uses that to send spans on to an external collector).

The row codec is :mod:`gateway.stores.trace_records`; the reads are :mod:`gateway.stores.trace_queries`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.stores import sqlite
from gateway.stores.trace_queries import get_trace, list_traces
from gateway.stores.trace_records import Row, decode_record, gateway_rows, pack_request, tkey_of
from observability.batches import BatchWriter

log = logging.getLogger("strangler.traces")
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY,
    tkey INTEGER NOT NULL UNIQUE,
    trace_id TEXT NOT NULL,
    route TEXT,
    gateway TEXT            -- the gateway's request, packed (see pack_fields / decode_record); NULL if none
);
CREATE TABLE IF NOT EXISTS span_sets (
    id INTEGER PRIMARY KEY, tkey INTEGER NOT NULL, service TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, error INTEGER NOT NULL, shadow INTEGER NOT NULL,
    span_count INTEGER NOT NULL, has_root INTEGER NOT NULL, root_name TEXT NOT NULL, root_start INTEGER NOT NULL,
    spans TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS span_sets_tkey ON span_sets(tkey);
"""

SCHEMA_VERSION = 2
QUEUE_LIMIT = 50_000
INTERVAL = 1.0
MAX_BATCH = 20_000
ORPHAN_WAIT = 5.0
# A trace row made first by spans from elsewhere gets the gateway's request; one that has it keeps it.
_INSERT_GATEWAY = ("INSERT INTO traces (tkey, trace_id, route, gateway) VALUES {values} "
                   "ON CONFLICT (tkey) DO UPDATE SET route = coalesce(traces.route, excluded.route), "
                   "gateway = coalesce(traces.gateway, excluded.gateway)")
_INSERT_SETS = ("INSERT INTO span_sets (tkey, service, start_ns, end_ns, error, shadow, span_count, has_root, "
                "root_name, root_start, spans) VALUES {values}")
CHUNK = 500


def insert_many(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert with one multi-row statement per ``CHUNK`` rows. ``executemany`` steps once per row, and every step
    lets go of the GIL and takes it back: on a busy event loop, each of those is a forced thread switch."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i:i + CHUNK]
        db.execute(sql.format(values=", ".join([one] * len(chunk))), [v for row in chunk for v in row])


class TraceStore(BatchWriter):
    def __init__(self, path: Path, *, max_traces: int = 2000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_traces = max(1, max_traces)
        self.coalesced = 0        # requests never written because newer ones filled the bound in the same flush
        self.orphaned = 0         # spans dropped because their trace was not (or no longer) in the store
        self.written = 0
        self._orphans: list[tuple[float, list[Row]]] = []
        self._listeners: list[Callable[[list[Row]], None]] = []
        db = self._connect()
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            # Traces are disposable diagnostics: a file from another layout is started afresh, not migrated.
            db.executescript("DROP TABLE IF EXISTS traces; DROP TABLE IF EXISTS span_sets; "
                             "DROP TABLE IF EXISTS trace_services; DROP TABLE IF EXISTS spans;")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.close()
        self._db: sqlite3.Connection | None = None   # the writer thread's own connection
        super().__init__("strangler-traces", interval=INTERVAL, limit=QUEUE_LIMIT, max_batch=MAX_BATCH)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite.connect(self.path)
        # Traces are diagnostics: after a power cut losing the last second of them is fine; an fsync per
        # checkpoint at full request rate is not.
        db.execute("PRAGMA synchronous=OFF")
        return db

    def reader(self) -> sqlite3.Connection:
        return self._connect()

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.flush(timeout=0.5)  # what was queued before this read is part of the answer
        db = self.reader()
        try:
            return fn(db, *args, **kwargs)
        finally:
            db.close()

    def list_traces(self, *, route: str | None = None, status: str | None = None, min_ms: float | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
        return self._read(list_traces, route=route, status=status, min_ms=min_ms,  # type: ignore[no-any-return]
                          limit=limit)

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        return self._read(get_trace, trace_id)  # type: ignore[no-any-return]

    def add_listener(self, fn: Callable[[list[Row]], None]) -> None:
        """``fn(rows)`` is called in the writer thread with the exportable rows of each batch."""
        self._listeners.append(fn)

    # -- the writer thread (``put``, ``flush`` and ``close`` come from BatchWriter) --------------------------------

    def run_writer(self) -> None:
        self._db = self._connect()
        try:
            self.drain_forever()
        finally:
            self._db.close()

    def has_backlog(self) -> bool:
        return bool(self._orphans)

    def write_batch(self, batch: list[Any]) -> None:
        assert self._db is not None
        self._write_batch(self._db, batch)

    def _write_batch(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        records: list[tuple[Any, ...]] = []
        joined: list[tuple[Any, ...]] = []   # requests that continued a caller's trace (a remote parent)
        rows: list[Row] = []
        exported: list[Row] = []
        # Above max_traces requests per flush, the older ones would be evicted by this very transaction: they are
        # not even built (the store still ends up holding exactly the newest max_traces).
        skip = sum(1 for item in batch if type(item) is tuple) - self.max_traces
        if skip > 0:
            self.coalesced += skip
        for item in batch:
            try:
                if type(item) is tuple:  # the gateway's request: its row is only built here
                    if skip > 0:
                        skip -= 1
                        continue
                    values = pack_request(item)
                    (joined if item[2] else records).append(values)
                    if self._listeners:
                        exported.extend(gateway_rows(decode_record(*values[:2], values[3])))
                    continue
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
        try:
            db.execute("BEGIN")
            if joined:
                records.extend(self._place_joined(db, joined, rows))
            if records:
                insert_many(db, _INSERT_GATEWAY, records)
            if rows or self._orphans:
                self._write_sets(db, rows)
            self._evict(db)
            db.execute("COMMIT")
            self.written += len(records) + len(rows)
        except sqlite3.Error:
            log.exception("trace store write failed; %d item(s) lost", len(batch))
            if db.in_transaction:
                db.execute("ROLLBACK")

    @staticmethod
    def _place_joined(db: sqlite3.Connection, joined: list[tuple[Any, ...]], rows: list[Row]) -> list[tuple[Any, ...]]:
        """Requests that joined a caller's trace: the first request of a trace the store has no gateway request
        for takes the trace's row (returned); any other is added to ``rows``, to be written as a span set."""
        taken: set[int] = set()
        keys = list({values[0] for values in joined})
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            taken.update(k for (k,) in db.execute(
                f"SELECT tkey FROM traces WHERE gateway IS NOT NULL AND tkey IN ({','.join('?' * len(chunk))})",
                chunk))
        first: list[tuple[Any, ...]] = []
        for values in joined:
            if values[0] in taken:
                rows.extend(gateway_rows(decode_record(values[0], values[1], values[3])))
            else:
                taken.add(values[0])
                first.append(values)
        return first

    def _write_sets(self, db: sqlite3.Connection, rows: list[Row]) -> None:
        now = time.monotonic()
        retry, self._orphans = self._orphans, []
        for deadline, spans in retry:
            if deadline > now:
                rows.extend(spans)
            else:
                self.orphaned += len(spans)
        sets: dict[tuple[str, str], list[Row]] = {}
        for r in rows:
            sets.setdefault((r.trace_id, r.service), []).append(r)
        known = self._known(db, {tkey_of(tid) for tid, _ in sets})
        values = []
        for (tid, service), spans in sets.items():
            key = tkey_of(tid)
            # The set's candidate for the trace's root: its parentless span, else its earliest.
            roots = [s for s in spans if not s.parent_span_id]
            if key not in known:
                if not roots:
                    # Children of a trace this store does not hold: not yet written (another process's writer),
                    # or already evicted. Wait a little for the first case; then drop them rather than keep
                    # fragments that would push whole traces out.
                    self._orphans.append((now + ORPHAN_WAIT, spans))
                    continue
                db.execute("INSERT OR IGNORE INTO traces (tkey, trace_id) VALUES (?, ?)", (key, tid))
                known.add(key)
            root = min(roots or spans, key=lambda s: s.start_ns)
            values.append((key, service, min(s.start_ns for s in spans), max(s.end_ns for s in spans),
                           int(any(s.status == "error" for s in spans)),
                           int(any(s.attributes.get("strangler.shadow") is True for s in spans)), len(spans),
                           int(bool(roots)), root.name, root.start_ns,
                           _json([[s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, s.attributes,
                                   s.status] for s in spans])))
        insert_many(db, _INSERT_SETS, values)

    @staticmethod
    def _known(db: sqlite3.Connection, keys: set[int]) -> set[int]:
        known: set[int] = set()
        items = list(keys)
        for i in range(0, len(items), 500):
            chunk = items[i:i + 500]
            known.update(k for (k,) in db.execute(
                f"SELECT tkey FROM traces WHERE tkey IN ({','.join('?' * len(chunk))})", chunk))
        return known

    def _evict(self, db: sqlite3.Connection) -> None:
        # seq is the rowid: arrival order across every process writing this file, and max - min + 1 >= count.
        newest = db.execute("SELECT max(seq) FROM traces").fetchone()[0]
        if newest is None:
            return
        cutoff = newest - self.max_traces
        oldest = db.execute("SELECT min(seq) FROM traces").fetchone()[0]
        if oldest is None or oldest > cutoff:
            return
        db.execute("DELETE FROM span_sets WHERE tkey IN (SELECT tkey FROM traces WHERE seq <= ?)", (cutoff,))
        db.execute("DELETE FROM traces WHERE seq <= ?", (cutoff,))


# -- reading (admin API, any thread, own connection) -----------------------------------------------------------
