"""``ComparisonStore`` on the shared store (and ``Compat``, which ``traces`` uses too): the same writer, bounds and queries as the SQLite store
(``stores.diffs``, ``stores.diff_queries``), on a PostgreSQL connection.

The comparison store's statements are written once, in the SQL both databases speak (upserts name their conflict
target and qualify the old value), with sqlite3's ``?`` placeholders and ``rowid``; ``Compat`` turns those into
psycopg's ``%s`` and PostgreSQL's ``ctid`` (and ``INSERT OR IGNORE`` into ``ON CONFLICT DO NOTHING``), and gives rows that answer by name and by index as ``sqlite3.Row``
does. Counters are additive upserts, so every instance of a fleet adds to the same ones.

An outage: the writer keeps the batch it could not commit and reconnects with backoff until it can (a deadlock
between two instances trimming the same rows is retried the same way); meanwhile comparisons queue in the
store's bounded queue, and what does not fit is dropped and counted (``strangler_dropped_total{store=
"comparisons"}``). Reads during an outage fail, and the admin API says so.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Loader

from gateway.stores.diffs import SAMPLES_PER_SECOND, DiffStore
from gateway.stores.postgres.link import BACKOFF_S
from gateway.stores.postgres.schema import migrate

log = logging.getLogger("strangler.store")


class Row(tuple):  # type: ignore[type-arg]
    """A row that answers ``row["name"]`` and ``row[0]``, like ``sqlite3.Row``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)


def _rows(cursor: psycopg.Cursor[Any]) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}

    def make(values: Any) -> Row:
        row = Row(values)
        row._index = names
        return row

    return make


class _Number(Loader):
    """``numeric`` as SQLite gives it: an int when whole (``SUM`` of a BIGINT column is numeric in PostgreSQL)."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        return float(text) if any(c in text for c in ".eEN") else int(text)


def _connect(conninfo: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(conninfo, autocommit=True, row_factory=_rows)
    conn.adapters.register_loader("numeric", _Number)
    return conn


@functools.lru_cache(maxsize=256)
def _translate(sql: str) -> bytes:
    out = sql.replace("%", "%%").replace("?", "%s").replace("rowid", "ctid")
    if out.startswith("INSERT OR IGNORE "):
        out = "INSERT " + out.removeprefix("INSERT OR IGNORE ") + " ON CONFLICT DO NOTHING"
    return out.encode()


class Compat:
    """A psycopg connection speaking the sqlite3 dialect of the comparison store's statements."""

    def __init__(self, conninfo: str, connect: bool = True) -> None:
        """``connect=False``: connect later, with ``reconnect``."""
        self.conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        if connect:
            self._conn = _connect(conninfo)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise psycopg.OperationalError("not connected")
        return self._conn

    def execute(self, sql: str, args: Any = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(_translate(sql), tuple(args))

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def reconnect(self, stop: threading.Event) -> bool:
        """Reconnect with backoff until it works (True) or ``stop`` is set (False)."""
        with contextlib.suppress(Exception):
            self.close()
        wait = BACKOFF_S[0]
        while not stop.wait(wait):
            try:
                self._conn = _connect(self.conninfo)
                return True
            except psycopg.Error:
                wait = min(wait * 2, BACKOFF_S[1])
        return False


class PgDiffStore(DiffStore):
    def __init__(self, conninfo: str, *, max_samples: int = 200, max_age: float = 7 * 86400.0,
                 samples_per_second: int = SAMPLES_PER_SECOND) -> None:
        self.conninfo = conninfo
        self._stopping = threading.Event()
        super().__init__(Path("."), max_samples=max_samples, max_age=max_age,
                         samples_per_second=samples_per_second)

    def _prepare(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                migrate(conn)
        except psycopg.OperationalError as exc:
            log.warning("comparison store: the store is unreachable (%s); comparisons queue until it is back",
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def _connect(self) -> Compat:  # type: ignore[override]
        return Compat(self.conninfo)

    def reader(self) -> Compat:  # type: ignore[override]
        return Compat(self.conninfo)

    def noise_counts(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Learned noise, read once at start: an instance starting during an outage starts without it (and
        learns again) rather than not at all."""
        try:
            return super().noise_counts()
        except psycopg.OperationalError:
            log.warning("comparison store: the store is unreachable; starting without the learned noise fields")
            return {}, {}

    def run_writer(self) -> None:
        # Connect (and read which fields have examples) before the first batch, as the base writer does, but
        # wait for the store if it is away, until it is back or the store is closed.
        db = Compat(self.conninfo, connect=False)
        while True:
            try:
                if db.reconnect(self._stopping):
                    self._has_example = {(r, f, k) for r, f, k in db.execute(
                        "SELECT route, field, kind FROM fields WHERE counted > 0 AND last_id IS NOT NULL")}
                break
            except psycopg.OperationalError:
                continue
        self._db = db  # type: ignore[assignment]
        try:
            self.drain_forever()
        finally:
            with contextlib.suppress(Exception):
                db.close()

    def write_batch(self, batch: list[Any]) -> None:
        """Write the batch, or keep it and reconnect with backoff while the store is away (or while this batch
        loses a deadlock with another instance's); new comparisons wait in the bounded queue meanwhile."""
        db: Any = self._db
        while True:
            try:
                self._write(db, batch)
                return
            except psycopg.OperationalError:
                if self._stopping.is_set() or not db.reconnect(self._stopping):
                    raise

    def close(self) -> None:
        self.flush()
        self._stopping.set()   # a writer waiting for the store gives up: what it held is counted as dropped
        super().close()
