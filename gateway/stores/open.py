"""Open the stores that ``store:`` in routes.yaml names: the SQLite files in ``store.dir`` (the default), or the
PostgreSQL database of ``store.url`` / ``STRANGLER_STORE_URL`` shared by a fleet."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.stores.admission import SqliteAdmissionQueue
from gateway.stores.api import Stores
from gateway.stores.diffs import DiffStore
from gateway.stores.journal import SQLiteJournal
from gateway.stores.members import LocalMembership
from gateway.stores.postgres.admission import PgAdmissionQueue
from gateway.stores.postgres.connect import conninfo, store_url
from gateway.stores.postgres.open import open_comparisons, open_journal, open_postgres, open_traces
from gateway.stores.state import StateStore
from gateway.stores.traces import TraceStore
from gateway.stores.workers import SqlitePeers

STATE_DB, DIFFS_DB, TRACES_DB = "state.db", "diffs.db", "traces.db"
ADMISSION_DB = "admission.db"
JOURNAL_DB = "journal.db"


def open_stores(cfg: Config, *, instance: str = "", worker: int | None = None) -> Stores:
    """``instance``: this gateway's name in a fleet; ``worker``: its index among ``--workers N`` processes."""
    spec = cfg.store
    url = store_url(spec)
    if url:
        state, members, peers = open_postgres(url, spec, instance, worker)
        # One waiting line per route for the whole fleet (every worker process is an instance of it), and the
        # fleet's sync journal: one deliverer per route, whichever instance answered the write.
        name = instance if worker is None else f"{instance}.{worker}"
        admission = PgAdmissionQueue(conninfo(url, spec.password_file), name)
        journal = open_journal(url, spec, instance)
        return Stores(state=state, comparisons=open_comparisons(url, spec), traces=open_traces(url, spec),
                      admission=admission, journal=journal, members=members, peers=peers)
    admission = SqliteAdmissionQueue(spec.dir / ADMISSION_DB, worker or 0)
    journal = SQLiteJournal(spec.dir / JOURNAL_DB, retention=spec.max_age)
    comparisons = DiffStore(spec.dir / DIFFS_DB, max_samples=spec.max_samples, max_age=spec.max_age)
    traces = TraceStore(spec.dir / TRACES_DB, max_traces=spec.max_traces)
    return Stores(state=StateStore(spec.dir / STATE_DB), comparisons=comparisons, traces=traces,
                  admission=admission, journal=journal, members=LocalMembership(str(spec.dir)),
                  peers=SqlitePeers(spec.dir / STATE_DB, worker) if worker is not None else None)
