"""What each capability needs of its store: the interfaces callers depend on.

One store per kind of state, each small:

    PinStore          rollback pins, progressive canary steps, the route history   (rollout, admin)
    ComparisonStore   shadow comparison samples, counters, learned noise           (shadow, admin)
    TraceStore        spans of the gateway and of the services (OTLP)              (telemetry, admin)
    PeerExchange      per-second statistics shared between gateway processes       (rollout's guard)
    AdmissionQueue    the waiting rooms' lines and the keys that sign their tickets (admission)
    Membership        the gateway instances sharing the store, the store's health  (admin)
    SyncJournal       mirrored writes waiting for, or done with, the other side    (sync, admin)

Writers never block the event loop: the comparison and trace stores queue records for a writer thread and count
what a full queue drops; the pin store's writes are rare (a rollback, a reload). Reads may block, so callers on the
event loop run them in a worker thread (``asyncio.to_thread``).

``gateway.stores.open.open_stores`` picks the implementation from ``store:`` in routes.yaml: the SQLite files in
``store.dir`` (the embedded default), or PostgreSQL (``store.url``) shared by a fleet (``stores/postgres``).
The sync journal and the waiting-room queue add their interfaces here and their fields to ``Stores``; callers
do not change.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.stores.admission import SigningKey
from gateway.stores.state import Pin, Step


class PinStore(Protocol):
    """Runtime state that is not in routes.yaml. ``pins`` and ``steps`` are in-memory snapshots, cheap to read on
    the request path; ``refresh`` re-reads them when another process changed them."""

    @property
    def pins(self) -> Mapping[str, Pin]: ...

    @property
    def steps(self) -> Mapping[str, Step]: ...

    def refresh(self) -> bool: ...

    def pin(self, route: str, fingerprint: str, actor: str, reason: str,
            detail: dict[str, Any] | None = None) -> Pin: ...

    def unpin(self, route: str, actor: str, reason: str = "", kind: str = "resume") -> bool: ...

    def set_step(self, route: str, fingerprint: str, step: int, actor: str, reason: str,
                 detail: dict[str, Any] | None = None) -> None: ...

    def record(self, kind: str, route: str | None, actor: str, reason: str = "",
               detail: dict[str, Any] | None = None) -> None: ...

    def history(self, route: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class ComparisonStore(Protocol):
    """Writes (``put``, ``skip``, ``noise_sample``) queue and never block; reads block (run them in a thread)."""

    dropped: int

    def put(self, item: Any) -> bool: ...

    def skip(self, route: str, reason: str) -> None: ...

    def noise_sample(self, route: str, fields: frozenset[str]) -> None: ...

    def flush(self, timeout: float = 5.0) -> bool: ...

    def close(self) -> None: ...

    def list_samples(self, route: str | None = None, verdict: str | None = None, limit: int = 50,
                     before: int | None = None, since: float | None = None,
                     trace_id: str | None = None) -> list[dict[str, Any]]: ...

    def get_sample(self, sample_id: int) -> dict[str, Any] | None: ...

    def replayable(self, route: str, verdict: str | None, limit: int) -> list[dict[str, Any]]: ...

    def report(self, since: Mapping[str, float | str] | None = None) -> dict[str, dict[str, Any]]: ...

    def clear(self, route: str) -> bool: ...

    def noise_counts(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]: ...


class TraceStore(Protocol):
    dropped: int
    max_traces: int

    def put(self, item: Any) -> bool: ...

    def flush(self, timeout: float = 5.0) -> bool: ...

    def close(self) -> None: ...

    def add_listener(self, fn: Callable[[list[Any]], None]) -> None: ...

    def list_traces(self, *, route: str | None = None, status: str | None = None, min_ms: float | None = None,
                    limit: int = 50) -> list[dict[str, Any]]: ...

    def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...


class PeerExchange(Protocol):
    """Per-second statistics windows of the other gateway processes judging the same routes: the worker
    processes of one machine (SQLite) or every instance of a fleet (PostgreSQL), through the same interface.
    ``rows`` are (route, side, second, requests, errors, compared, mismatches, histogram JSON)."""

    def publish(self, rows: list[tuple[object, ...]]) -> None: ...

    def read_peers(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Membership(Protocol):
    """The gateway instances sharing the store, and the store's own health as this instance sees it."""

    def announce(self, info: dict[str, Any]) -> None: ...

    def members(self) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class AdmissionQueue(Protocol):
    """One waiting line per route with an ``admission:`` block, first come first served, let in at the rate.

    ``enter``, ``join``, ``poll`` are on the request path and must stay cheap (no I/O: an implementation on a
    shared database keeps a local view and synchronises in ``maintain``, which runs about once a second). A shared
    implementation makes numbers, positions and the rate fleet-wide; ``available`` is False while its store
    cannot be reached (the rooms then open or close as each route says), ``problem`` says why.

    ``epoch`` names the room (admitted tickets carry it; a room closed and opened again has a new one),
    ``line_id`` the line that numbers belong to (waiting tickets carry it; the epoch itself when the line is
    shared by every process). ``poll`` answers 0 when the number was called (let it in now), its position (> 0) while it waits, -1 when the
    line does not know it (it stopped polling for longer than the grace, or was never issued here).
    """

    available: bool
    problem: str

    def configure(self, route: str, rate: float, capacity: float, limit: int, grace: float,
                  paused: bool) -> bool: ...

    def remove(self, route: str) -> None: ...

    def routes(self) -> list[str]: ...

    def epoch(self, route: str) -> str: ...

    def line_id(self, route: str) -> str: ...

    def enter(self, route: str) -> bool: ...

    def join(self, route: str) -> tuple[int, int] | None: ...

    def poll(self, route: str, number: int) -> int: ...

    def eta(self, route: str, position: int) -> float: ...

    def waiting(self, route: str) -> int: ...

    def lost(self, route: str) -> int: ...

    def keys(self) -> list[SigningKey]: ...

    def rotate_key(self) -> SigningKey: ...

    async def maintain(self) -> int: ...

    async def flush(self) -> None: ...


@dataclass(slots=True)
class JournalEntry:
    """One write to mirror, as the request path hands it over."""

    route: str
    target: str
    side: str
    method: str
    raw_target: str
    headers: list[tuple[str, str]]
    body: bytes
    idem_key: str
    answered_by: str
    answered_status: int
    entity: str | None = None
    trace_id: str | None = None
    created_at: float = field(default_factory=time.time)


class SyncJournal(Protocol):
    """Writes to mirror to the other side. ``append`` never blocks: its future resolves to the entries' sequence
    numbers once they are durable (group commit); everything else blocks (run it in a thread). Delivery is in
    ``seq`` order per route.

    ``available`` (read on the request path, no I/O) is False while the journal knows it cannot make a write
    durable (a shared journal whose store is unreachable); synced writes are then refused before either side
    sees them, ``problem`` says why. Other requests are not affected."""

    available: bool
    problem: str

    def append(self, entries: list[JournalEntry]) -> concurrent.futures.Future[list[int]]: ...

    def pending_routes(self) -> list[str]: ...

    def next_pending(self, route: str, limit: int = 100) -> list[dict[str, Any]]: ...

    def delivered(self, done: list[tuple[int, int]]) -> None: ...

    def failed(self, seq: int, error: str, status: int | None, next_at: float) -> None: ...

    def dead(self, seq: int, status: int, error: str) -> None: ...

    def verified(self, seq: int, result: dict[str, Any]) -> None: ...

    def retry_dead(self, route: str) -> int: ...

    def summary(self) -> dict[str, dict[str, Any]]: ...

    def pending_count(self, route: str) -> int: ...

    def entries(self, route: str | None = None, state: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]: ...

    def writes_between(self, route: str, since: float, until: float) -> list[tuple[str, float, float | None]]: ...

    def flush(self, timeout: float = 5.0) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    state: PinStore
    comparisons: ComparisonStore
    traces: TraceStore
    admission: AdmissionQueue
    journal: SyncJournal | None = None
    members: Membership | None = None
    peers: PeerExchange | None = None

    def close(self) -> None:
        for store in (self.comparisons, self.traces, self.admission, self.peers, self.members, self.state,
                      self.journal):
            if store is not None:
                store.close()
