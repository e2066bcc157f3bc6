"""The read queries of the comparison store: recent samples, one sample in full, the samples to replay, the
per-route report, and the learned-noise counts.

Each runs on a connection of its own from :meth:`DiffStore.reader <gateway.stores.diffs.DiffStore.reader>`, which
is how ``DiffStore``'s read methods call them: WAL mode lets it read beside the writer. Reads may block.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from gateway.stores.diff_schema import bucket_upper_ms, is_noise
from gateway.stores.diff_slots import scoped_entry


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
                 limit: int = 50, before: int | None = None, since: float | None = None,
                 trace_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM samples WHERE 1=1"
    args: list[Any] = []
    if trace_id is not None:
        sql += " AND trace_id = ?"
        args.append(trace_id)
    if since is not None:
        sql += " AND at >= ?"
        args.append(since)
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


def replayable(db: sqlite3.Connection, route: str, verdict: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest recorded (not replayed) comparisons of a route, whole, for ``strangler replay``."""
    sql, args = "SELECT id FROM samples WHERE route = ? AND replay = 0", [route]
    if verdict:
        sql += " AND verdict = ?"
        args.append(verdict)
    rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [s for s in (get_sample(db, r[0]) for r in rows) if s]


def report(db: sqlite3.Connection, since: Mapping[str, float | str] | None = None) -> dict[str, dict[str, Any]]:
    """Per route: verdict counts and rates, skips by reason, top differing fields, noise fields with their rates
    (``learned`` when they pass the noise threshold), and p50/p99 of both sides over the compared requests.

    For a route named in ``since``, the counts are those from that moment on, or of that version of the route
    (``diff_slots``); noise stays whole, since it is learned about legacy."""
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
    if since:
        examples = {(r[0], r[1], r[2]): r[3] for r in db.execute(
            "SELECT route, field, kind, last_id FROM fields WHERE last_id IS NOT NULL")}
        for name, moment in since.items():
            mine = {(f, k): i for (r, f, k), i in examples.items() if r == name}
            route(name).update(scoped_entry(db, name, moment, _quantiles, mine))
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
