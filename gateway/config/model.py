"""The configuration as the gateway reads it: a tree of frozen dataclasses rooted at ``Config``.

:mod:`gateway.config.parse` builds one from routes.yaml; a reload builds a new tree and swaps it whole. No field
has a default here: every default is written once, in the schema (:mod:`gateway.config.document`), and the
builders pass every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGES = ("legacy", "shadow", "canary", "extracted")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float  # TCP connect
    response: float  # request sent -> response headers
    idle: float  # gap between two body reads, and how long a pooled connection may sit idle


@dataclass(frozen=True, slots=True)
class CircuitSpec:
    failures: int  # consecutive failures that open the circuit
    cooldown: float  # open -> half-open after this long


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """How to speak TLS to an https:// backend: always verified, against ``ca`` if given, else the system CAs."""

    ca: Path | None = None            # trust only this CA bundle (PEM)
    cert: Path | None = None          # client certificate chain (PEM) for mutual TLS, with its key
    key: Path | None = None
    server_name: str | None = None    # SNI and the name verified, if not the URL's host


@dataclass(frozen=True, slots=True)
class ListenerTLS:
    """The public listener's certificate chain and key (PEM), re-read when they change on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    url: str
    scheme: str
    host: str
    port: int
    base_path: str            # prefix prepended to the forwarded path ("" for none)
    timeouts: Timeouts
    max_connections: int      # pool size
    max_concurrency: int | None  # in-flight requests beyond which the gateway answers 503
    queue: int                # requests allowed to wait for a concurrency slot
    circuit: CircuitSpec | None
    tls: BackendTLS | None = None     # set for https:// backends

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StickyKey:
    kind: str                 # "header" | "cookie" | "param"
    name: str


@dataclass(frozen=True, slots=True)
class CompareSpec:
    ignore: tuple[str, ...]
    unordered: tuple[Any, ...]
    tolerance: float
    noise: float  # percent of shadowed safe requests also sent twice to legacy
    headers: bool
    rules: Any  # gateway.compare.rules.CompareRules, compiled once


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    percent: float
    key: StickyKey | None
    methods: frozenset[str]
    max_body: int
    timeout: float  # the whole shadow exchange, independent of the backend's own timeouts
    compare: CompareSpec


@dataclass(frozen=True, slots=True)
class CanarySpec:
    weight: float
    sticky: StickyKey | None
    steps: tuple[float, ...]
    interval: float


@dataclass(frozen=True, slots=True)
class VerifySpec:
    method: str               # the read that checks a mirrored write, on both sides
    path: str                 # a path template; {name} takes the write's path parameter of that name


@dataclass(frozen=True, slots=True)
class SyncSpec:
    methods: frozenset[str]   # writes mirrored to the other side
    max_body: int             # a larger write is refused (413): it could not be journaled
    verify: VerifySpec | None = None


@dataclass(frozen=True, slots=True)
class GuardSpec:
    window: float
    min_requests: int
    max_error_rate: float  # percent
    max_mismatch_rate: float | None
    max_p99_ratio: float | None


@dataclass(frozen=True, slots=True)
class AdmissionSpec:
    rate: float               # visitors admitted per second
    session: float            # seconds an admitted visitor passes without queueing again
    queue: int                # the most that may wait
    grace: float              # a waiting visitor silent this long loses the place
    paused: bool
    on_store_down: str        # "open" | "closed"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    match: Any                # gateway.routing.matching.MatchSpec
    stage: str
    to: str | None            # the extracted backend
    legacy: str               # the monolith backend for this route (the top-level fallback unless set)
    priority: int | None
    shadow: ShadowSpec | None
    canary: CanarySpec | None
    on_error: str             # "fail" | "fallback"
    guard: GuardSpec | None
    reverse_shadow: bool
    line: int
    order: int
    fingerprint: str          # changes when the user edits this route; clears a rollback pin
    admission: AdmissionSpec | None = None   # a waiting room (not part of the fingerprint: not a rollout intent)
    sync: SyncSpec | None = None   # mirror completed writes to the other side (gateway.sync)


@dataclass(frozen=True, slots=True)
class TracingSpec:
    sample: float  # percent of root traces kept
    response_header: bool
    max_per_second: int  # at most this many new traces kept per second (0: no limit)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    dir: Path
    max_samples: int  # comparison samples kept per route and verdict
    max_age: float
    max_traces: int
    url: str | None           # postgresql://... : the fleet's shared store; None: SQLite in dir
    password_file: Path | None


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_body: int | None  # None: unlimited (streamed)
    client_idle: float  # an idle keep-alive connection, or a request head still arriving
    drain: float  # on SIGTERM: keep serving this long with /readyz at 503
    # 431 beyond this head size; what to do with '_' header names and with ';' path parameters
    max_request_head: int
    underscores_in_headers: str
    path_parameters: str


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    listen: tuple[str, int]
    admin_listen: tuple[str, int]
    admin_hosts: tuple[str, ...]       # more Host values the admin listener answers (schema.ADMIN_ACCESS)
    admin_read_token: bool             # reads need the admin token too
    backends: Mapping[str, Backend]
    fallback: str
    routes: tuple[RouteSpec, ...]
    tracing: TracingSpec
    store: StoreSpec
    limits: Limits
    digest: str                        # sha256 of the file's bytes
    warnings: tuple[str, ...] = ()
    tls: ListenerTLS | None = None     # the public listener over HTTPS

    def route(self, name: str) -> RouteSpec | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None
