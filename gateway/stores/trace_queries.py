"""Reads of the trace store: recent traces as summaries (filters see every span), one trace whole."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.stores.trace_records import GatewayRecord, Row, decode_record, gateway_rows, tkey_of

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
