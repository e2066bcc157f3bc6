"""``SyncJournal`` on the shared store: one journal for the whole fleet, so a write any instance answered is
delivered by exactly one of them, in order per route, and every instance shows the same counts.

The tables and the states are those of the SQLite journal (``gateway.stores.journal`` says what they hold):
``sync_journal`` (pending entries and dead letters, with headers and bodies) and ``sync_delivered`` (small rows
kept ``retention`` seconds for the surfaces).

Appends (the request path). ``append`` only queues; a writer thread commits everything queued since its last
commit in one transaction and then resolves the futures, so the client's answer waits for PostgreSQL's commit,
never the event loop. Each append transaction takes a transaction-level advisory lock first: appends of the
whole fleet commit one after the other, so ``seq`` order is commit order and a deliverer that has read up to
``seq`` N never finds a smaller ``seq`` committed later (that entry would be delivered after its successor).

An outage. A write the store cannot journal is never answered as if it would reach the other side: while the
writer cannot reach the store ``available`` is False and ``Mirror.begin`` refuses synced writes with a 503
before they reach either side (nothing to reconcile); a write caught between the answering side's 2xx and a
commit that fails gets the same 503 as a failed SQLite commit. Journaling to local disk instead would leave a
write on a machine that may never come back, and let another instance deliver later writes of the same route
before it: the fleet-wide order is only in the shared table. Requests that are not synced writes are not
affected. The writer probes the store every ``PROBE_S`` while idle, so ``available`` follows it within seconds.

Delivery. Every instance's deliverer asks for a route's pending entries; ``next_pending`` answers only to the
instance that holds the route's session-level advisory lock (taken with ``pg_try_advisory_lock`` on the
deliverer's connection, kept while the route has work), so one instance delivers a route at a time. When that
instance dies its connection closes, PostgreSQL releases the lock, and the next instance to look (within the
deliverer's ``POLL``) takes the route over from the first entry not marked delivered. Entries sent but not yet
marked are sent again, with their ``Idempotency-Key``: at least once, applied once.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from gateway.stores.api import JournalEntry
from gateway.stores.group_commit import GroupCommit
from gateway.stores.postgres.schema import migrate

log = logging.getLogger("strangler.sync")

T = TypeVar("T")

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
PRUNE_EVERY = 60.0
PROBE_S = 1.0
# Advisory lock keys (two int4): "sync" for the routes' delivery locks, "sjap" for the append lock.
ROUTE_LOCK = 0x73796E63
APPEND_LOCK = 0x736A6170

SERVER_KEEPALIVE = (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2), ("tcp_keepalives_count", 2),
                    ("tcp_user_timeout", 10_000))
INSERT = ("INSERT INTO sync_journal (route, target, side, method, raw_target, headers, body, idem_key, entity, "
          "trace_id, answered_by, answered_status, created_at, instance) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq")


class PgJournal:
    """``SyncJournal`` over the fleet's PostgreSQL. ``append`` never blocks; everything else does (threads)."""

    def __init__(self, conninfo: str, instance: str, retention: float = 7 * 86400.0) -> None:
        self.conninfo = conninfo
        self.instance = instance
        self.retention = retention
        self.available = False            # read on the request path: set by the writer thread only
        self.problem = "connecting to the store"
        self.commits = 0
        self._conn: psycopg.Connection[Any] | None = None    # the writer thread's
        # The deliverer's and the surfaces' connection: it holds the routes' delivery locks, so it is one
        # connection for the life of the process (a reconnect loses the locks, and ``_held`` forgets them).
        self._db: psycopg.Connection[Any] | None = None
        self._db_lock = threading.Lock()
        self._held: set[str] = set()
        self._pruned = 0.0
        # One attempt at start, as the pin store makes: a gateway that starts with the store up takes synced
        # writes from its first request (bounded by the connect timeout when the store is away).
        self._probe()
        self._commits = GroupCommit(self._commit, idle=self._probe, idle_every=PROBE_S)

    # -- the request path ------------------------------------------------------------------------------------------

    def append(self, entries: list[JournalEntry]) -> concurrent.futures.Future[list[int]]:
        """Queue ``entries``; the future resolves to their sequence numbers once PostgreSQL committed them."""
        return self._commits.append(entries)

    # -- the writer thread -----------------------------------------------------------------------------------------

    def _writer_conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True)
            migrate(self._conn)
        return self._conn

    def _probe(self) -> None:
        try:
            self._writer_conn().execute("SELECT 1")
            self._up()
        except psycopg.Error as exc:
            self._down(exc)

    def _up(self) -> None:
        if not self.available:
            log.info("sync journal: the store is reachable; synced writes are taken again",
                     extra={"event": "sync_journal_up"})
        self.available, self.problem = True, ""

    def _down(self, exc: BaseException) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        if self.available:
            log.error("sync journal: the store is unreachable (%s); synced writes are refused (503) until it is back",
                      _reason(exc), extra={"event": "sync_journal_down"})
        self.available, self.problem = False, f"the store is unreachable: {_reason(exc)}"

    def _insert(self, rows: list[tuple[Any, ...]]) -> list[int]:
        conn = self._writer_conn()
        seqs: list[int] = []
        with conn.transaction(), conn.cursor() as cur:
            # Appends commit one after the other across the fleet: seq order is commit order (see above).
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (APPEND_LOCK,))
            cur.executemany(INSERT, rows, returning=True)
            while True:
                row = cur.fetchone()
                if row is not None:
                    seqs.append(int(row[0]))
                if not cur.nextset():
                    break
        return seqs

    def _commit(self, batch: list[tuple[list[JournalEntry], concurrent.futures.Future[list[int]]]]) -> None:
        rows = [(e.route, e.target, e.side, e.method, e.raw_target, json.dumps(e.headers), e.body, e.idem_key,
                 e.entity, e.trace_id, e.answered_by, e.answered_status, e.created_at, self.instance)
                for entries, _ in batch for e in entries]
        try:
            try:
                seqs = self._insert(rows)
            except psycopg.OperationalError:
                # A connection that went stale while idle (the server restarted): one fresh attempt. Should the
                # first commit have gone through after all, the entries are delivered twice, with one key.
                self._down_quietly()
                seqs = self._insert(rows)
            self._up()
            self.commits += 1
        except psycopg.Error as exc:   # the client then gets a 503: a write that is not journaled is not answered OK
            self._down(exc)
            for _, fut in batch:
                fut.set_exception(exc)
            return
        at = 0
        for entries, fut in batch:
            fut.set_result(seqs[at:at + len(entries)])
            at += len(entries)

    def _down_quietly(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    # -- the deliverer ---------------------------------------------------------------------------------------------

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``fn`` on the deliverer's connection; a broken connection is dropped (and with it the route locks)
        and the call raises ``ConnectionError``."""
        with self._db_lock:
            try:
                if self._db is None or self._db.closed:
                    self._held.clear()
                    self._db = self._connect_deliverer()
                return fn(self._db)
            except psycopg.OperationalError as exc:
                if self._db is not None:
                    self._db.close()
                self._db = None
                self._held.clear()
                # The callers (deliverer, admin API) know no driver: an outage is a ConnectionError to them.
                raise ConnectionError(f"the store is unreachable: {_reason(exc)}") from exc

    def _connect_deliverer(self) -> psycopg.Connection[Any]:
        # Named after the instance, so ``pg_locks`` joined with ``pg_stat_activity`` shows who delivers what.
        db = psycopg.connect(self.conninfo, autocommit=True, application_name=f"strangler-sync {self.instance}"[:63])
        # The route locks die with the session: the server must notice a vanished machine within seconds (its
        # own TCP keepalive defaults to hours), or its routes would wait that long for another deliverer.
        for name, value in SERVER_KEEPALIVE:
            try:
                db.execute(f"SET {name} = {value}".encode())
            except psycopg.errors.UndefinedObject:   # tcp_user_timeout is PostgreSQL 12+: the rest still helps
                pass
        return db

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda db: db.execute(sql.encode(), args).fetchall())

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return self._run(lambda db: db.execute(sql.encode(), args).rowcount)

    def pending_routes(self) -> list[str]:
        """Every route with pending entries, fleet-wide (``next_pending`` decides who delivers them)."""
        return [r for (r,) in self._rows("SELECT DISTINCT route FROM sync_journal WHERE state = 'pending'")]

    def owns(self, route: str) -> bool:
        """Whether this instance holds the route's delivery lock (taking it when it is free)."""
        def take(db: psycopg.Connection[Any]) -> bool:
            if route not in self._held:
                row = db.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (ROUTE_LOCK, route)).fetchone()
                if row is None or not row[0]:
                    return False
                self._held.add(route)
            return True
        return self._run(take)

    def next_pending(self, route: str, limit: int = 100) -> list[dict[str, Any]]:
        """The route's next pending entries in ``seq`` order; none unless this instance delivers the route."""
        if not self.owns(route):
            return []

        def read(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cur = db.execute(
                "SELECT seq, route, target, side, method, raw_target, headers, body, idem_key, entity, trace_id, "
                "created_at, attempts, next_at FROM sync_journal WHERE state = 'pending' AND route = %s "
                "ORDER BY seq LIMIT %s", (route, limit))
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        rows = self._run(read)
        for row in rows:
            row["headers"] = [tuple(h) for h in json.loads(row["headers"])]
            row["body"] = bytes(row["body"]) if row["body"] is not None else None
        return rows

    def delivered(self, done: list[tuple[int, int]]) -> None:
        """Move ``(seq, status)`` entries to ``sync_delivered`` in one transaction, without headers and body."""
        now = time.time()

        def move(db: psycopg.Connection[Any]) -> None:
            with db.transaction(), db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO sync_delivered SELECT seq, route, target, side, method, raw_target, idem_key, "
                    "entity, trace_id, answered_by, answered_status, created_at, attempts + 1, %s, %s, verify, "
                    "instance FROM sync_journal WHERE seq = %s ON CONFLICT (seq) DO NOTHING",
                    [(status, now, seq) for seq, status in done])
                cur.execute("DELETE FROM sync_journal WHERE seq = ANY(%s)", ([seq for seq, _ in done],))
        self._run(move)
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            self._exec("DELETE FROM sync_delivered WHERE done_at < %s", (now - self.retention,))

    def failed(self, seq: int, error: str, status: int | None, next_at: float) -> None:
        self._exec("UPDATE sync_journal SET attempts = attempts + 1, last_error = %s, last_status = %s, "
                   "next_at = %s WHERE seq = %s", (error, status, next_at, seq))

    def dead(self, seq: int, status: int, error: str) -> None:
        self._exec("UPDATE sync_journal SET state = 'dead', attempts = attempts + 1, last_status = %s, "
                   "last_error = %s, done_at = %s WHERE seq = %s", (status, error, time.time(), seq))

    def verified(self, seq: int, result: dict[str, Any]) -> None:
        # The entry may not be marked delivered yet (marks go a batch at a time): it moves with its verdict.
        text = json.dumps(result)
        self._exec("UPDATE sync_journal SET verify = %s WHERE seq = %s", (text, seq))
        self._exec("UPDATE sync_delivered SET verify = %s WHERE seq = %s", (text, seq))

    def retry_dead(self, route: str) -> int:
        """Make a route's dead letters pending again (their place in the order is their original one)."""
        return self._exec("UPDATE sync_journal SET state = 'pending', next_at = 0, done_at = NULL "
                          "WHERE state = 'dead' AND route = %s", (route,))

    # -- the surfaces ----------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per route, fleet-wide: pending, delivered, dead, the oldest pending write's time, the head's last
        error, verify counts."""
        out: dict[str, dict[str, Any]] = {}
        for route, state, n, oldest in self._rows(
                "SELECT route, state, COUNT(*), MIN(created_at) FROM sync_journal GROUP BY route, state"):
            row = out.setdefault(route, _empty())
            row[state] = int(n)
            if state == PENDING:
                row["oldest_pending_at"] = oldest
        for route, error, status, attempts in self._rows(
                "SELECT route, last_error, last_status, attempts FROM sync_journal WHERE seq IN "
                "(SELECT MIN(seq) FROM sync_journal WHERE state = 'pending' GROUP BY route)"):
            out.setdefault(route, _empty())["head"] = {"error": error, "status": status, "attempts": attempts}
        for route, n in self._rows("SELECT route, COUNT(*) FROM sync_delivered GROUP BY route"):
            out.setdefault(route, _empty())[DELIVERED] = int(n)
        for route, verdict, n in self._rows(
                "SELECT route, verify::jsonb ->> 'verdict', COUNT(*) FROM (SELECT route, verify FROM sync_delivered "
                "UNION ALL SELECT route, verify FROM sync_journal) v WHERE verify IS NOT NULL GROUP BY 1, 2"):
            out.setdefault(route, _empty())["verified"][verdict] = int(n)
        return out

    def pending_count(self, route: str) -> int:
        rows = self._rows("SELECT COUNT(*) FROM sync_journal WHERE state = 'pending' AND route = %s", (route,))
        return int(rows[0][0])

    def entries(self, route: str | None = None, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest entries (without bodies), for ``strangler sync ROUTE`` and the console."""
        columns = ("seq, route, target, side, method, raw_target, idem_key, entity, answered_by, answered_status, "
                   "created_at, {state} AS state, attempts, last_status, {error} AS last_error, done_at, verify")
        where = " WHERE route = %s" if route is not None else " WHERE TRUE"
        parts: list[str] = []
        args: list[Any] = []
        if state in (None, PENDING, DEAD):
            parts.append(f"SELECT {columns.format(state='state', error='last_error')} FROM sync_journal{where}"
                         + (" AND state = %s" if state is not None else ""))
            args += [a for a in (route, state) if a is not None]
        if state in (None, DELIVERED):
            parts.append(f"SELECT {columns.format(state=repr(DELIVERED), error='NULL')} FROM sync_delivered{where}")
            args += [route] if route is not None else []
        sql = " UNION ALL ".join(parts) + " ORDER BY seq DESC LIMIT %s"

        def read(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            cur = db.execute(sql.encode(), (*args, limit))
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        rows = self._run(read)
        for row in rows:
            row["verify"] = json.loads(row["verify"]) if row["verify"] else None
        return rows

    def writes_between(self, route: str, since: float, until: float) -> list[tuple[str, float, float | None]]:
        """``(raw_target, created_at, done_at)`` of a route's writes made in ``[since, until]``, fleet-wide."""
        return [(t, c, d) for t, c, d in self._rows(
            "SELECT raw_target, created_at, NULL::double precision FROM sync_journal WHERE route = %s "
            "AND created_at BETWEEN %s AND %s UNION ALL SELECT raw_target, created_at, done_at FROM sync_delivered "
            "WHERE route = %s AND created_at BETWEEN %s AND %s", (route, since, until, route, since, until))]

    def flush(self, timeout: float = 5.0) -> bool:
        return self._commits.flush(timeout)

    def close(self) -> None:
        self._commits.close()
        with self._commits.writing:
            self._down_quietly()
        with self._db_lock:   # closing the session releases the routes' delivery locks for the others
            if self._db is not None:
                self._db.close()
            self._db = None
            self._held.clear()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _empty() -> dict[str, Any]:
    return {PENDING: 0, DELIVERED: 0, DEAD: 0, "oldest_pending_at": None, "head": None, "verified": {}}
