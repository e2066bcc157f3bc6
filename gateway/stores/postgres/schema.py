"""The shared store's tables, as numbered migrations applied at start.

Several instances may start at once: the migrations run under a transaction-level advisory lock, so one applies
them and the others wait, then find nothing left to do. A migration is never edited once released; a change
is a new one at the end of the list.
"""

from __future__ import annotations

import psycopg

# pg_advisory_xact_lock key: any constant unique to this application ("strangle" in ASCII).
MIGRATION_LOCK = 0x737472616E676C65

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE pins (
    route TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, instance TEXT NOT NULL DEFAULT ''
);
CREATE TABLE steps (
    route TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, step INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL
);
CREATE TABLE history (
    id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, route TEXT,
    actor TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', detail JSONB NOT NULL DEFAULT '{}',
    instance TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_route ON history (route, id);
CREATE TABLE instances (
    id TEXT PRIMARY KEY, address TEXT NOT NULL, admin TEXT NOT NULL DEFAULT '', version TEXT NOT NULL,
    generation INTEGER NOT NULL, digest TEXT NOT NULL, started DOUBLE PRECISION NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(), buffered INTEGER NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0
);
-- per-second guard statistics: ``second`` is wall-clock (epoch) seconds, shared by every machine.
CREATE TABLE peer_stats (
    instance TEXT NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL, second BIGINT NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL, compared INTEGER NOT NULL, mismatches INTEGER NOT NULL,
    hist JSONB NOT NULL, PRIMARY KEY (instance, route, side, second)
);
CREATE INDEX peer_stats_second ON peer_stats (second);
"""),
    # The comparison store (gateway.stores.diff_schema and diff_slots have the same tables in SQLite, and say what
    # they hold).
    (2, """
CREATE TABLE samples (
    id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, route TEXT NOT NULL, method TEXT NOT NULL,
    target TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', trace_id TEXT,
    primary_backend TEXT, shadow_backend TEXT, primary_status INTEGER, shadow_status INTEGER,
    primary_ms DOUBLE PRECISION, shadow_ms DOUBLE PRECISION,
    differences TEXT NOT NULL DEFAULT '[]', ignored TEXT NOT NULL DEFAULT '[]',
    request_headers TEXT NOT NULL DEFAULT '[]', request_body BYTEA,
    primary_headers TEXT NOT NULL DEFAULT '[]', primary_body BYTEA, primary_truncated INTEGER DEFAULT 0,
    shadow_headers TEXT NOT NULL DEFAULT '[]', shadow_body BYTEA, shadow_truncated INTEGER DEFAULT 0,
    replay INTEGER NOT NULL DEFAULT 0, request_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX samples_kind ON samples (route, verdict, replay, id);
CREATE INDEX samples_at ON samples (at);
CREATE TABLE verdicts (route TEXT, verdict TEXT, n BIGINT NOT NULL, PRIMARY KEY (route, verdict));
CREATE TABLE skips (route TEXT, reason TEXT, n BIGINT NOT NULL, PRIMARY KEY (route, reason));
CREATE TABLE fields (
    route TEXT, field TEXT, kind TEXT, counted BIGINT NOT NULL DEFAULT 0, ignored BIGINT NOT NULL DEFAULT 0,
    last_id BIGINT, PRIMARY KEY (route, field, kind)
);
CREATE TABLE noise (route TEXT, field TEXT, differed BIGINT NOT NULL, PRIMARY KEY (route, field));
CREATE TABLE noise_samples (route TEXT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE latency (route TEXT, side TEXT, bucket INTEGER, n BIGINT NOT NULL, PRIMARY KEY (route, side, bucket));
CREATE TABLE slots (
    route TEXT, version TEXT, slot BIGINT, kind TEXT, name TEXT, detail TEXT NOT NULL DEFAULT '', n BIGINT NOT NULL,
    PRIMARY KEY (route, version, slot, kind, name, detail)
);
CREATE INDEX slots_by_slot ON slots (slot);
"""),
    # The trace store (gateway.stores.traces has the same tables in SQLite, and says what they hold).
    (3, """
CREATE TABLE traces (
    seq BIGSERIAL PRIMARY KEY, tkey BIGINT NOT NULL UNIQUE, trace_id TEXT NOT NULL, route TEXT, gateway TEXT
);
CREATE TABLE span_sets (
    id BIGSERIAL PRIMARY KEY, tkey BIGINT NOT NULL, service TEXT NOT NULL, start_ns BIGINT NOT NULL,
    end_ns BIGINT NOT NULL, error INTEGER NOT NULL, shadow INTEGER NOT NULL, span_count INTEGER NOT NULL,
    has_root INTEGER NOT NULL, root_name TEXT NOT NULL, root_start BIGINT NOT NULL, spans TEXT NOT NULL
);
CREATE INDEX span_sets_tkey ON span_sets (tkey);
"""),
    # The waiting rooms (gateway.stores.postgres.admission says what they hold). Times are the server's clock
    # (epoch seconds), so instances on machines whose clocks differ agree on who stopped polling.
    (4, """
CREATE TABLE admission_lines (
    route TEXT PRIMARY KEY, epoch TEXT NOT NULL, tokens DOUBLE PRECISION NOT NULL DEFAULT 0,
    last DOUBLE PRECISION NOT NULL, lost BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE admission_places (
    route TEXT NOT NULL REFERENCES admission_lines ON DELETE CASCADE, number BIGINT NOT NULL,
    state TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (route, number)
);
CREATE TABLE admission_presence (
    route TEXT NOT NULL, instance TEXT NOT NULL, seen DOUBLE PRECISION NOT NULL, PRIMARY KEY (route, instance)
);
CREATE TABLE admission_keys (
    kid BIGSERIAL PRIMARY KEY, secret BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL, retired DOUBLE PRECISION
);
"""),
    # The sync journal (gateway.stores.journal has the same tables in SQLite, and says what they hold).
    (5, """
CREATE TABLE sync_journal (
    seq BIGSERIAL PRIMARY KEY, route TEXT NOT NULL, target TEXT NOT NULL, side TEXT NOT NULL, method TEXT NOT NULL,
    raw_target TEXT NOT NULL, headers TEXT NOT NULL, body BYTEA, idem_key TEXT NOT NULL, entity TEXT, trace_id TEXT,
    answered_by TEXT NOT NULL, answered_status INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL DEFAULT 0, last_status INTEGER, last_error TEXT,
    done_at DOUBLE PRECISION, verify TEXT, instance TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sync_journal_pending ON sync_journal (state, route, seq);
CREATE INDEX sync_journal_time ON sync_journal (route, created_at);
CREATE TABLE sync_delivered (
    seq BIGINT PRIMARY KEY, route TEXT NOT NULL, target TEXT NOT NULL, side TEXT NOT NULL, method TEXT NOT NULL,
    raw_target TEXT NOT NULL, idem_key TEXT NOT NULL, entity TEXT, trace_id TEXT, answered_by TEXT NOT NULL,
    answered_status INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
    last_status INTEGER, done_at DOUBLE PRECISION NOT NULL, verify TEXT, instance TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sync_delivered_done ON sync_delivered (done_at);
CREATE INDEX sync_delivered_time ON sync_delivered (route, created_at);
"""),
)

LATEST = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection) -> int:
    """Apply the migrations this database lacks; returns the schema version now in place."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                     "applied DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM now()))")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0
        if current > LATEST:
            raise RuntimeError(f"the store's schema is version {current}, newer than this gateway's {LATEST}: "
                               "upgrade this gateway")
        for version, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                current = version
    return current
