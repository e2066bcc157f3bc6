"""Open the stores that ``store:`` in routes.yaml names: today the SQLite files in ``store.dir``."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.stores.admission import SqliteAdmissionQueue
from gateway.stores.api import Stores
from gateway.stores.diffs import DiffStore
from gateway.stores.journal import SQLiteJournal
from gateway.stores.state import StateStore
from gateway.stores.traces import TraceStore

STATE_DB, DIFFS_DB, TRACES_DB = "state.db", "diffs.db", "traces.db"
ADMISSION_DB = "admission.db"
JOURNAL_DB = "journal.db"


def open_stores(cfg: Config, worker: int = 0) -> Stores:
    spec = cfg.store
    return Stores(state=StateStore(spec.dir / STATE_DB),
                  comparisons=DiffStore(spec.dir / DIFFS_DB, max_samples=spec.max_samples, max_age=spec.max_age),
                  traces=TraceStore(spec.dir / TRACES_DB, max_traces=spec.max_traces),
                  admission=SqliteAdmissionQueue(spec.dir / ADMISSION_DB, worker),
                  journal=SQLiteJournal(spec.dir / JOURNAL_DB, retention=spec.max_age))
