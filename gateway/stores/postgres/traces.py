"""``TraceStore`` on the shared store: the embedded collector's traces, one view for the whole fleet.

The same writer, layout, eviction and queries as the SQLite store (``stores.traces``), on a ``Compat``
connection. ``max_traces`` bounds the table for the fleet: each instance evicts beyond it after its writes.
Traces are diagnostics: while the store is away, batches are dropped and counted (``strangler_dropped_total
{store="traces"}``) rather than held, and the writer reconnects at its next batch.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import psycopg

from gateway.stores.postgres.comparisons import Compat
from gateway.stores.postgres.schema import migrate
from gateway.stores.traces import TraceStore

log = logging.getLogger("strangler.traces")


class PgTraceStore(TraceStore):
    # A statement's own failure is logged and its batch dropped; an outage (OperationalError) is counted quietly.
    errors = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError, psycopg.InternalError)

    def __init__(self, conninfo: str, *, max_traces: int = 2000) -> None:
        self.conninfo = conninfo
        self._down = False
        super().__init__(Path("."), max_traces=max_traces)

    def _prepare(self) -> None:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.conninfo, autocommit=True) as conn:
            migrate(conn)

    def _connect(self) -> Compat:  # type: ignore[override]
        return Compat(self.conninfo)

    def reader(self) -> Compat:  # type: ignore[override]
        return Compat(self.conninfo)

    def run_writer(self) -> None:
        try:
            self.drain_forever()
        finally:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()

    def write_batch(self, batch: list[Any]) -> None:
        try:
            if self._db is None:
                self._db = self._connect()  # type: ignore[assignment]
            super().write_batch(batch)
        except psycopg.OperationalError as exc:
            if self._db is not None:
                with contextlib.suppress(Exception):
                    self._db.close()
            self._db = None
            if not self._down:
                log.warning("trace store unreachable (%s): traces are dropped and counted until it is back",
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            self._down = True
            raise
        self._down = False
