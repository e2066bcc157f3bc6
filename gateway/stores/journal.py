"""The sync journal in SQLite (``journal.db`` in ``store.dir``): the mirrored writes, durable before the client
gets its answer.

Group commit: the event loop hands an entry to ``append`` and awaits the future it returns; one writer thread takes
every entry queued since its last commit and inserts them in one transaction (``synchronous=FULL``, so a commit
survives a power cut, not only a crash; the deliverer's updates use ``NORMAL``). Under load one fsync covers many
writes, which is what keeps the journal cheap on the request path.

Two tables. ``journal`` holds what may still be sent: ``pending`` entries (to deliver, in ``seq`` order per
route) and ``dead`` ones (the other side answered 4xx: kept, shown, retryable, never dropped), with their
headers and bodies. A delivered entry moves to ``delivered`` without them (it will never be sent again): a small
row (method, path, key, status, times, verification) kept ``retention`` seconds for the surfaces, then removed.
Rows leave ``journal`` roughly in ``seq`` order, so its pages empty whole and the incremental vacuum gives them
back: the file stays about as large as what is pending plus the retained history.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from gateway.stores.api import JournalEntry
from gateway.stores.group_commit import GroupCommit
from gateway.stores.sqlite import connect

log = logging.getLogger("strangler.sync")

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
PRUNE_EVERY = 60.0
WAL_LIMIT = 4 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    route        TEXT NOT NULL,
    target       TEXT NOT NULL,          -- the backend the write is mirrored to
    side         TEXT NOT NULL,          -- legacy | extracted: which side that backend is
    method       TEXT NOT NULL,
    raw_target   TEXT NOT NULL,
    headers      TEXT NOT NULL,          -- JSON [[name, value], ...]
    body         BLOB,
    idem_key     TEXT NOT NULL,
    entity       TEXT,
    trace_id     TEXT,
    answered_by  TEXT NOT NULL,
    answered_status INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL DEFAULT 0,
    last_status  INTEGER,
    last_error   TEXT,
    done_at      REAL,
    verify       TEXT                    -- JSON {verdict, differences} of the read-after-write check
);
CREATE INDEX IF NOT EXISTS journal_pending ON journal(state, route, seq);
CREATE INDEX IF NOT EXISTS journal_time ON journal(route, created_at);
CREATE TABLE IF NOT EXISTS delivered (
    seq          INTEGER PRIMARY KEY,    -- the entry's seq in journal
    route        TEXT NOT NULL,
    target       TEXT NOT NULL,
    side         TEXT NOT NULL,
    method       TEXT NOT NULL,
    raw_target   TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    entity       TEXT,
    trace_id     TEXT,
    answered_by  TEXT NOT NULL,
    answered_status INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    last_status  INTEGER,
    done_at      REAL NOT NULL,
    verify       TEXT
);
CREATE INDEX IF NOT EXISTS delivered_done ON delivered(done_at);
CREATE INDEX IF NOT EXISTS delivered_time ON delivered(route, created_at);
"""


class SQLiteJournal:
    """``SyncJournal`` over one SQLite file. ``append`` never blocks the loop; the reads block (run them in a
    thread)."""

    def __init__(self, path: Path, retention: float = 7 * 86400.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retention = retention
        # Pages emptied by deliveries and the retention go back to the file system (a new file only: the mode is
        # fixed once the first page is written).
        self._db = connect(path, before_wal=("PRAGMA auto_vacuum=INCREMENTAL",))
        # The WAL file is cut back to this after a checkpoint instead of staying as large as its biggest burst.
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()           # the writing connection: appends, the deliverer's updates
        # Reads (the deliverer's next entries, the surfaces' summaries) use a connection of their own: in WAL mode
        # they never wait for a commit, and a commit never waits for them.
        self._reader = connect(path)
        self._read_lock = threading.Lock()
        self._pruned = 0.0
        self.commits = 0
        self.available = True     # a local file: a failed commit shows at the commit (and answers 503)
        self.problem = ""
        self._commits = GroupCommit(self._commit)

    # -- the request path ------------------------------------------------------------------------------------------

    def append(self, entries: list[JournalEntry]) -> concurrent.futures.Future[list[int]]:
        """Queue ``entries``; the future resolves to their sequence numbers once they are committed to disk."""
        return self._commits.append(entries)

    def _commit(self, batch: list[tuple[list[JournalEntry], concurrent.futures.Future[list[int]]]]) -> None:
        rows = [(e.route, e.target, e.side, e.method, e.raw_target, json.dumps(e.headers), e.body, e.idem_key,
                 e.entity, e.trace_id, e.answered_by, e.answered_status, e.created_at)
                for entries, _ in batch for e in entries]
        try:
            with self._lock:
                # An append is what the client's answer waits for: FULL makes its commit survive a power cut.
                # The deliverer's bookkeeping stays at NORMAL (durable across a crash, and a delivery whose mark
                # a power cut undid is only sent again, with its key).
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seqs = [self._db.execute(
                        "INSERT INTO journal (route, target, side, method, raw_target, headers, body, idem_key, "
                        "entity, trace_id, answered_by, answered_status, created_at) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row).lastrowid for row in rows]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                finally:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            self.commits += 1
        except Exception as exc:  # the client then gets a 503: a write that is not journaled is not answered OK
            log.exception("sync journal commit failed")
            for _, fut in batch:
                fut.set_exception(exc)
            return
        at = 0
        for entries, fut in batch:
            fut.set_result([int(seq or 0) for seq in seqs[at:at + len(entries)]])
            at += len(entries)

    # -- the deliverer ---------------------------------------------------------------------------------------------

    def pending_routes(self) -> list[str]:
        with self._read_lock:
            rows = self._reader.execute("SELECT DISTINCT route FROM journal WHERE state = 'pending'").fetchall()
        return [r for (r,) in rows]

    def next_pending(self, route: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._read_lock:
            cur = self._reader.execute(
                "SELECT seq, route, target, side, method, raw_target, headers, body, idem_key, entity, trace_id, "
                "created_at, attempts, next_at FROM journal WHERE state = 'pending' AND route = ? "
                "ORDER BY seq LIMIT ?", (route, limit))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["headers"] = [tuple(h) for h in json.loads(row["headers"])]
        return rows

    def delivered(self, done: list[tuple[int, int]]) -> None:
        """Move ``(seq, status)`` entries to ``delivered``, in one transaction; their bodies and headers
        (credentials included) are dropped: they will never be sent again."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO delivered SELECT seq, route, target, side, method, raw_target, idem_key, "
                    "entity, trace_id, answered_by, answered_status, created_at, attempts + 1, ?, ?, verify "
                    "FROM journal WHERE seq = ?", [(status, now, seq) for seq, status in done])
                self._db.executemany("DELETE FROM journal WHERE seq = ?", [(seq,) for seq, _ in done])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._maybe_prune()

    def failed(self, seq: int, error: str, status: int | None, next_at: float) -> None:
        self._update("UPDATE journal SET attempts = attempts + 1, last_error = ?, last_status = ?, next_at = ? "
                     "WHERE seq = ?", (error, status, next_at, seq))

    def dead(self, seq: int, status: int, error: str) -> None:
        self._update("UPDATE journal SET state = 'dead', attempts = attempts + 1, last_status = ?, last_error = ?, "
                     "done_at = ? WHERE seq = ?", (status, error, time.time(), seq))

    def verified(self, seq: int, result: dict[str, Any]) -> None:
        # The entry may not be marked delivered yet (marks go a batch at a time): it moves with its verdict.
        text = json.dumps(result)
        with self._lock:
            self._db.execute("UPDATE journal SET verify = ? WHERE seq = ?", (text, seq))
            self._db.execute("UPDATE delivered SET verify = ? WHERE seq = ?", (text, seq))

    def retry_dead(self, route: str) -> int:
        """Make a route's dead letters pending again (their place in the order is their original one)."""
        with self._lock:
            return self._db.execute("UPDATE journal SET state = 'pending', next_at = 0, done_at = NULL "
                                    "WHERE state = 'dead' AND route = ?", (route,)).rowcount

    def _update(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _maybe_prune(self) -> None:
        now = time.time()
        if now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        with self._lock:
            self._db.execute("DELETE FROM delivered WHERE done_at < ?", (now - self.retention,))
            # Pages emptied by deliveries and by the retention go back to the file system. executescript steps
            # the pragma to the end (a plain execute frees one page per step).
            if self._db.execute("PRAGMA freelist_count").fetchone()[0]:
                self._db.executescript("PRAGMA incremental_vacuum;")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- the surfaces ----------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per route: pending, delivered, dead, the oldest pending write's time, the last error, verify counts."""
        out: dict[str, dict[str, Any]] = {}
        with self._read_lock:
            for route, state, n, oldest in self._reader.execute(
                    "SELECT route, state, COUNT(*), MIN(created_at) FROM journal GROUP BY route, state"):
                row = out.setdefault(route, _empty())
                row[state] = n
                if state == PENDING:
                    row["oldest_pending_at"] = oldest
            for route, error, status, attempts in self._reader.execute(
                    "SELECT route, last_error, last_status, attempts FROM journal WHERE seq IN "
                    "(SELECT MIN(seq) FROM journal WHERE state = 'pending' GROUP BY route)"):
                out[route]["head"] = {"error": error, "status": status, "attempts": attempts}
            for route, n in self._reader.execute("SELECT route, COUNT(*) FROM delivered GROUP BY route"):
                out.setdefault(route, _empty())[DELIVERED] = n
            for route, verdict, n in self._reader.execute(
                    "SELECT route, json_extract(verify, '$.verdict'), COUNT(*) FROM (SELECT route, verify FROM "
                    "delivered UNION ALL SELECT route, verify FROM journal) WHERE verify IS NOT NULL GROUP BY 1, 2"):
                out.setdefault(route, _empty())["verified"][verdict] = n
        return out

    def pending_count(self, route: str) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM journal WHERE state = 'pending' AND route = ?",
                                        (route,)).fetchone()[0])

    def entries(self, route: str | None = None, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest entries (without bodies), for ``strangler sync ROUTE`` and the console."""
        columns = ("seq, route, target, side, method, raw_target, idem_key, entity, answered_by, answered_status, "
                   "created_at, {state} AS state, attempts, last_status, {error} AS last_error, done_at, verify")
        where = " WHERE route = ?" if route is not None else " WHERE 1"
        parts, args = [], []
        if state in (None, PENDING, DEAD):
            parts.append(f"SELECT {columns.format(state='state', error='last_error')} FROM journal{where}"
                         + (" AND state = ?" if state is not None else ""))
            args += [a for a in (route, state) if a is not None]
        if state in (None, DELIVERED):
            parts.append(f"SELECT {columns.format(state=repr(DELIVERED), error='NULL')} FROM delivered{where}")
            args += [route] if route is not None else []
        sql = " UNION ALL ".join(parts) + " ORDER BY seq DESC LIMIT ?"
        with self._read_lock:
            cur = self._reader.execute(sql, (*args, limit))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["verify"] = json.loads(row["verify"]) if row["verify"] else None
        return rows

    def writes_between(self, route: str, since: float, until: float) -> list[tuple[str, float, float | None]]:
        """``(raw_target, created_at, done_at)`` of a route's writes made in ``[since, until]`` (done_at: when
        the other side took it; None while pending)."""
        with self._read_lock:
            return [(t, c, d) for t, c, d in self._reader.execute(
                "SELECT raw_target, created_at, NULL FROM journal WHERE route = ? AND created_at BETWEEN ? AND ? "
                "UNION ALL SELECT raw_target, created_at, done_at FROM delivered WHERE route = ? AND created_at "
                "BETWEEN ? AND ?", (route, since, until, route, since, until))]

    def flush(self, timeout: float = 5.0) -> bool:
        return self._commits.flush(timeout)

    def close(self) -> None:
        self._commits.close()
        with self._lock:
            self._db.close()
        with self._read_lock:
            self._reader.close()


def _empty() -> dict[str, Any]:
    return {PENDING: 0, DELIVERED: 0, DEAD: 0, "oldest_pending_at": None, "head": None, "verified": {}}
