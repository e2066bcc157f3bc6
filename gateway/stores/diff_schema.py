"""The comparison store's file: its tables, the bounds that keep it small, and what the writer and the queries
both read the same way (the learned-noise threshold, the latency buckets).

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
"""

from __future__ import annotations

import math
import sqlite3

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


def migrate(db: sqlite3.Connection) -> None:
    """Stores written by an earlier version lack newer columns; add them in place."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
    if "request_truncated" not in columns:
        db.execute("ALTER TABLE samples ADD COLUMN request_truncated INTEGER NOT NULL DEFAULT 0")
