"""The fleet's stores on one link to PostgreSQL."""

from __future__ import annotations

from gateway.config.model import StoreSpec
from gateway.stores.postgres.comparisons import PgDiffStore
from gateway.stores.postgres.connect import conninfo, redact
from gateway.stores.postgres.journal import PgJournal
from gateway.stores.postgres.link import Link
from gateway.stores.postgres.members import PgMembership
from gateway.stores.postgres.peers import PgPeers
from gateway.stores.postgres.pins import PgPinStore
from gateway.stores.postgres.traces import PgTraceStore

LOCAL_COPY = "fleet-state.json"


def open_postgres(url: str, spec: StoreSpec, instance: str, worker: int | None
                  ) -> tuple[PgPinStore, PgMembership, PgPeers]:
    """Connect (or, when the store is away, start on the local copy of its state) and follow it."""
    link = Link(conninfo(url, spec.password_file), redact(url), instance)

    copy = LOCAL_COPY if worker is None else f"fleet-state-{worker}.json"
    state = PgPinStore(link, instance, spec.dir / copy)
    members = PgMembership(link, instance)
    peers = PgPeers(link, instance)
    state.start()
    return state, members, peers


def open_comparisons(url: str, spec: StoreSpec) -> PgDiffStore:
    return PgDiffStore(conninfo(url, spec.password_file), max_samples=spec.max_samples, max_age=spec.max_age)


def open_traces(url: str, spec: StoreSpec) -> PgTraceStore:
    return PgTraceStore(conninfo(url, spec.password_file), max_traces=spec.max_traces)


def open_journal(url: str, spec: StoreSpec, instance: str) -> PgJournal:
    return PgJournal(conninfo(url, spec.password_file), instance, retention=spec.max_age)
