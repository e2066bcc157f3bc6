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
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from gateway.stores import sqlite
from observability.batches import BatchWriter

log = logging.getLogger("strangler.traces")

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
KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
MASK63 = (1 << 63) - 1
_json = json.JSONEncoder(separators=(",", ":"), default=str).encode


def tkey_of(trace_hex: str) -> int:
    return int(trace_hex[16:], 16) & MASK63


class Row(NamedTuple):
    """One span as the API shows it: ids in lowercase hex, times in Unix nanoseconds, ``status`` unset|ok|error."""

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


class GatewayRecord(NamedTuple):
    """The gateway's part of one request, as stored in ``traces``. ``attempts`` holds one
    ``(span_id, backend, host, port, url_prefix, start_ns, end_ns, status, error_code, error_detail)`` per
    upstream attempt."""

    tkey: int
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    service: str
    method: str
    target: str
    scheme: str
    route: str | None
    http_route: str | None
    stage: str | None
    backend: str | None
    side: str | None
    shadow_to: str | None
    status: int
    bytes: int
    error_code: str | None
    error_detail: str | None
    error_status: int | None
    aborted: bool
    attempts: Sequence[Sequence[Any]]


# Packed text: fields joined by US, attempts by RS, the request's fields and its attempts by GS.
_FIELD, _RECORD, _GROUP = "\x1f", "\x1e", "\x1d"
_SEPARATORS = str.maketrans({_FIELD: " ", _RECORD: " ", _GROUP: " "})


def clean(text: str) -> str:
    """Free text (a request target, an error message) with the separators replaced."""
    return text.translate(_SEPARATORS) if (_FIELD in text or _RECORD in text or _GROUP in text) else text


def pack_request(snap: tuple[Any, ...]) -> tuple[int, str, str | None, str]:
    """A ``traces`` row ``(tkey, trace_id, route, packed)`` from ``RequestSpan.snapshot()``: the fields of
    ``GatewayRecord`` as text, attempts last."""
    (trace_id, span_id, parent_id, start, end, service, method, target, scheme, route, http_route, stage,
     backend, side, shadow_to, status, size, code, detail, error_status, aborted, attempts) = snap
    trace_hex = f"{trace_id:032x}"
    head = (f"{span_id:016x}\x1f{f'{parent_id:016x}' if parent_id else ''}\x1f{start}\x1f{end}\x1f{service}"
            f"\x1f{method}\x1f{clean(target)}\x1f{scheme}\x1f{route or ''}\x1f{http_route or ''}\x1f{stage or ''}"
            f"\x1f{backend or ''}\x1f{side or ''}\x1f{shadow_to or ''}\x1f{status}\x1f{size}\x1f{code or ''}"
            f"\x1f{clean(detail) if detail else ''}\x1f{error_status or ''}\x1f{1 if aborted else 0}")
    tail = _RECORD.join([
        f"{a_span:016x}\x1f{a_backend}\x1f{host}\x1f{port}\x1f{a_scheme}://{host}:{port}{base}\x1f{a_start}"
        f"\x1f{a_end}\x1f{a_status}\x1f{a_code or ''}\x1f{clean(a_detail) if a_detail else ''}"
        for a_span, a_backend, a_scheme, host, port, base, a_start, a_end, a_status, a_code, a_detail in attempts])
    return trace_id & MASK63, trace_hex, route, f"{head}{_GROUP}{tail}"


def _attempts(text: str) -> list[tuple[Any, ...]]:
    out = []
    for item in text.split(_RECORD) if text else ():
        sid, backend, host, port, prefix, start, end, status, code, detail = item.split(_FIELD)
        out.append((sid, backend, host, int(port), prefix, int(start), int(end or 0), int(status or 0),
                    code or None, detail or None))
    return out


def decode_record(tkey: int, trace_id: str, packed: str) -> GatewayRecord:
    """A ``GatewayRecord`` from a ``traces`` row's packed ``gateway`` value (see ``RequestSpan.record``)."""
    head, _, attempts = packed.partition(_GROUP)
    (span_id, parent, start, end, service, method, target, scheme, route, http_route, stage, backend, side,
     shadow_to, status, size, code, detail, error_status, aborted) = head.split(_FIELD)
    return GatewayRecord(tkey, trace_id, span_id, parent, int(start), int(end), service, method, target, scheme,
                         route or None, http_route or None, stage or None, backend or None, side or None,
                         shadow_to or None, int(status), int(size), code or None, detail or None,
                         int(error_status) if error_status else None, aborted == "1", _attempts(attempts))


def gateway_rows(r: GatewayRecord) -> list[Row]:
    """The SERVER span and the CLIENT span of each attempt, with their attributes (OTel HTTP conventions)."""
    path, _, query = r.target.partition("?")
    attrs: dict[str, Any] = {"http.request.method": r.method, "url.path": path, "url.scheme": r.scheme,
                             "http.response.status_code": r.status}
    if query:
        attrs["url.query"] = query
    if r.route is not None:
        attrs["strangler.route"] = r.route
    if r.http_route:
        attrs["http.route"] = r.http_route
    if r.stage is not None:
        attrs["strangler.stage"] = r.stage
        attrs["strangler.backend"] = r.backend
        attrs["strangler.side"] = r.side
    if r.shadow_to:
        attrs["strangler.shadow_to"] = r.shadow_to
    attrs["http.response.body.size"] = r.bytes
    if r.aborted:
        attrs["strangler.aborted"] = True
    if r.error_code:
        attrs["error.type"] = r.error_code
        attrs["otel.status_description"] = r.error_detail
    # A server span is an error on 5xx only (a 4xx is the client's fault: OTel HTTP semantic conventions).
    failed = r.status >= 500 or (r.error_status or 0) >= 500 or r.aborted
    name = f"{r.method} {r.route}" if r.route is not None else r.method
    rows = [Row(r.trace_id, r.span_id, r.parent_id, name, r.service, "server", r.start_ns, r.end_ns, attrs,
                "error" if failed else "unset")]
    for span_id, backend, host, port, prefix, start, end, status, code, detail in r.attempts:
        a: dict[str, Any] = {"http.request.method": r.method, "server.address": host, "server.port": port,
                             "url.full": prefix + r.target, "strangler.backend": backend}
        if status:
            a["http.response.status_code"] = status
        if code:
            a["error.type"] = code
            a["otel.status_description"] = detail
        # A client span is an error on 4xx and 5xx alike, and when no answer came at all.
        bad = bool(code) or status >= 400 or not end
        rows.append(Row(r.trace_id, span_id, r.span_id, f"{r.method} {backend}", r.service, "client", start,
                        end or r.end_ns, a, "error" if bad else "unset"))
    return rows


class Received:
    """Spans that arrived over OTLP; ``export`` is False for spans this gateway sent itself (a relay loop)."""

    __slots__ = ("spans", "export")

    def __init__(self, spans: list[Row], export: bool = True) -> None:
        self.spans = spans
        self.export = export

    def rows(self) -> list[Row]:
        return self.spans


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

_TRACE_COLUMNS = "tkey, trace_id, gateway"


def _record(row: Sequence[Any]) -> GatewayRecord | None:
    if row[2] is None:  # no gateway request in this trace (spans that only came over OTLP)
        return None
    return decode_record(row[0], row[1], row[2])


def list_traces(db: sqlite3.Connection, *, route: str | None = None, status: str | None = None,
                min_ms: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent traces, newest first: one summary per trace (filters on status and duration see every span)."""
    where, args = ("WHERE route = ?", (route,)) if route else ("", ())
    out: list[dict[str, Any]] = []
    cursor = db.execute(f"SELECT {_TRACE_COLUMNS} FROM traces {where} ORDER BY seq DESC", args)
    for row in cursor:
        summary = _summary(db, row)
        if summary is None:
            continue
        if status and summary["status"] != status:
            continue
        if min_ms and summary["duration_ms"] < min_ms:
            continue
        out.append(summary)
        if len(out) >= limit:
            break
    cursor.close()
    return out


def _summary(db: sqlite3.Connection, row: Sequence[Any]) -> dict[str, Any] | None:
    tkey, trace_id = row[0], row[1]
    rec = _record(row)
    starts: list[int] = []
    ends: list[int] = []
    services: set[str] = set()
    error = shadow = False
    verdicts: list[str] = []
    spans = 0
    # Root candidates: (0 for a parentless span else 1, start, name, service); the smallest wins.
    candidates: list[tuple[int, int, str, str]] = []
    if rec is not None:
        grows = gateway_rows(rec)
        starts.append(rec.start_ns)
        ends.extend(r.end_ns for r in grows)
        services.add(rec.service)
        error = any(r.status == "error" for r in grows)
        spans += len(grows)
        candidates.append((1 if rec.parent_id else 0, rec.start_ns, grows[0].name, rec.service))
    # The spans' JSON is read only for sets holding a shadow span: the shadow exchange carries its verdict.
    for service, start, end, err, shd, count, has_root, root_name, root_start, shadow_spans in db.execute(
            "SELECT service, start_ns, end_ns, error, shadow, span_count, has_root, root_name, root_start, "
            "CASE WHEN shadow THEN spans END FROM span_sets WHERE tkey = ?", (tkey,)):
        starts.append(start)
        ends.append(end)
        services.add(service)
        error = error or bool(err)
        shadow = shadow or bool(shd)
        if shadow_spans:
            verdicts.extend(v for *_, attrs, _status in json.loads(shadow_spans)
                            if isinstance(attrs, dict) and isinstance(v := attrs.get("strangler.verdict"), str))
        spans += count
        candidates.append((0 if has_root else 1, root_start, root_name, service))
    if not starts:
        return None
    start, end = min(starts), max(ends)
    root = min(candidates)
    return {"trace_id": trace_id, "root": root[2], "root_service": root[3], "route": rec.route if rec else None,
            "services": sorted(services), "service_count": len(services), "span_count": spans,
            "duration_ms": round((end - start) / 1e6, 3), "status": "error" if error else "ok",
            "has_shadow": shadow, "shadow_verdict": _worst(verdicts), "start_ns": start, "at": start / 1e9}


_VERDICT_RANK = ("error", "mismatch", "ignored", "match")


def _worst(verdicts: list[str]) -> str | None:
    """The trace's shadow verdict: the worst of its shadow exchanges' (None when no comparison was recorded)."""
    if not verdicts:
        return None
    return min(verdicts, key=lambda v: _VERDICT_RANK.index(v) if v in _VERDICT_RANK else len(_VERDICT_RANK))


def get_trace(db: sqlite3.Connection, trace_id: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {_TRACE_COLUMNS} FROM traces WHERE tkey = ?", (tkey_of(trace_id),)).fetchone()
    if row is None or row[1] != trace_id:
        return None
    rows: list[Row] = []
    rec = _record(row)
    if rec is not None:
        rows.extend(gateway_rows(rec))
    for service, spans in db.execute("SELECT service, spans FROM span_sets WHERE tkey = ? ORDER BY id",
                                     (row[0],)):
        for sid, parent, name, kind, start, end, attrs, status in json.loads(spans):
            rows.append(Row(trace_id, sid, parent, name, service, kind, start, end, attrs, status))
    if not rows:
        return None
    # A span sent twice (an exporter's retry) is shown once.
    unique = {r.span_id: r for r in rows}
    ordered = sorted(unique.values(), key=lambda r: (r.start_ns, r.span_id))
    return {"trace_id": trace_id, "spans": [
        {"span_id": r.span_id, "parent_span_id": r.parent_span_id or None, "name": r.name, "service": r.service,
         "kind": r.kind, "start_ns": r.start_ns, "end_ns": r.end_ns, "attributes": r.attributes,
         "status": r.status} for r in ordered]}
