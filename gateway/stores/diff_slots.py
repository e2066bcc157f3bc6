"""Comparison counters by time and by route version, so a report can be scoped: since a moment (``--since 10m``),
or to the route as routes.yaml has it now (``--since-reload``: what it did since its last change).

The permanent counters (:mod:`gateway.stores.diff_schema`) add up everything the store ever saw; beside them,
the ``slots`` table keeps the same counts per ``SLOT_S``-second slot and per route version (the route's
fingerprint, which changes with any edit of the route, a new ignore rule included): verdicts, counted and
ignored fields, skips and the latency histogram (at half its resolution: ``coarse_bucket``). Slots older than ``RETENTION`` are deleted, so the table holds
at most a day of slots per route (only slots with traffic have rows). A report since a moment counts the slot
that holds it and those after (up to ``SLOT_S`` seconds early); a report of one version is exact.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from typing import Any

SLOT_S = 10
RETENTION = 86400.0
PRUNE_EVERY = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    route TEXT, version TEXT, slot INTEGER, kind TEXT, name TEXT, detail TEXT NOT NULL DEFAULT '',
    n INTEGER NOT NULL, PRIMARY KEY (route, version, slot, kind, name, detail)
);
CREATE INDEX IF NOT EXISTS slots_by_slot ON slots(slot);
"""

# kind: "v" verdict, "f" counted field (detail: its kind), "i" ignored field, "s" skip reason,
# "l" latency (name: side, detail: bucket)
Key = tuple[str, str, int, str, str, str]


def slot_of(at: float) -> int:
    return int(at // SLOT_S)


def coarse_bucket(bucket: int) -> str:
    """Two latency buckets of the permanent histogram as one (about 19% wide, named by the upper one): the slots
    repeat the histogram per slot and version, and half the keys halve what that costs the writer."""
    return str((bucket // 2) * 2 + 1)




class SlotCounts:
    """Slot deltas of one writer batch, written with one upsert per key."""

    def __init__(self) -> None:
        self.counts: dict[Key, int] = {}

    def add(self, route: str, version: str, at: float, kind: str, name: str, detail: str = "", n: int = 1) -> None:
        key = (route, version, slot_of(at), kind, name, detail)
        self.counts[key] = self.counts.get(key, 0) + n

    def write(self, db: sqlite3.Connection) -> None:
        for key, n in self.counts.items():
            db.execute("INSERT INTO slots VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (route, version, slot, kind, name, "
                       "detail) DO UPDATE SET n = slots.n + excluded.n", (*key, n))


def prune(db: sqlite3.Connection, now: float | None = None) -> None:
    db.execute("DELETE FROM slots WHERE slot < ?", (slot_of((time.time() if now is None else now) - RETENTION),))


def scoped_entry(db: sqlite3.Connection, route: str, since: float | str,
                 quantiles: Any, examples: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """The report entry of one route over the slots from the moment ``since`` on, or of the route version
    ``since`` (the shape of ``diff_queries.report``). Skips are not counted per version: they are shown by time
    only."""
    entry: dict[str, Any] = {"verdicts": {}, "skipped": {}, "fields": [], "compared_latency": {}}
    fields: dict[tuple[str, str], dict[str, Any]] = {}
    latency: dict[str, list[tuple[int, int]]] = {}
    where = "version = ?" if isinstance(since, str) else "slot >= ?"
    arg = since if isinstance(since, str) else slot_of(since)
    for kind, name, detail, n in db.execute(
            f"SELECT kind, name, detail, SUM(n) FROM slots WHERE route = ? AND {where} GROUP BY kind, name, detail",
            (route, arg)):
        if kind == "v":
            entry["verdicts"][name] = n
        elif kind == "s":
            entry["skipped"][name] = n
        elif kind in ("f", "i"):
            f = fields.setdefault((name, detail), {"field": name, "kind": detail, "count": 0, "ignored": 0,
                                                   "last_sample": examples.get((name, detail))})
            f["count" if kind == "f" else "ignored"] += n
        elif kind == "l":
            latency.setdefault(name, []).append((int(detail), n))
    entry["fields"] = sorted(fields.values(), key=lambda f: (-f["count"], -f["ignored"], f["field"]))[:20]
    for side, buckets in latency.items():
        entry["compared_latency"][side] = quantiles(sorted(buckets))
    return entry
