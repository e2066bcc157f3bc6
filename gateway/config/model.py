"""The configuration as the gateway reads it: a tree of frozen dataclasses rooted at ``Config``.

:mod:`gateway.config.parse` builds one from routes.yaml; a reload builds a new tree and swaps it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("legacy", "shadow", "canary", "extracted")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0      # TCP connect
    response: float = 30.0    # request sent -> response headers
    idle: float = 60.0        # gap between two body reads, and how long a pooled connection may sit idle


@dataclass(frozen=True, slots=True)
class CircuitSpec:
    failures: int = 5         # consecutive failures that open the circuit
    cooldown: float = 10.0    # open -> half-open after this long


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

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class StickyKey:
    kind: str                 # "header" | "cookie" | "param"
    name: str


@dataclass(frozen=True, slots=True)
class CompareSpec:
    ignore: tuple[str, ...] = ()
    unordered: tuple[Any, ...] = ()
    tolerance: float = 0.0
    noise: float = 0.0        # percent of shadowed safe requests also sent twice to legacy
    headers: bool = True
    rules: Any = None         # gateway.compare.rules.CompareRules, compiled once


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    percent: float = 100.0
    key: StickyKey | None = None
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    max_body: int = 1024 * 1024
    timeout: float = 5.0      # the whole shadow exchange, independent of the backend's own timeouts
    compare: CompareSpec = field(default_factory=CompareSpec)


@dataclass(frozen=True, slots=True)
class CanarySpec:
    weight: float = 0.0
    sticky: StickyKey | None = None
    steps: tuple[float, ...] = ()
    interval: float = 300.0


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
    window: float = 60.0
    min_requests: int = 50
    max_error_rate: float = 2.0     # percent
    max_mismatch_rate: float | None = None
    max_p99_ratio: float | None = None


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
    sync: SyncSpec | None = None   # mirror completed writes to the other side (gateway.sync)


@dataclass(frozen=True, slots=True)
class TracingSpec:
    sample: float = 100.0     # percent of root traces kept
    response_header: bool = True
    max_per_second: int = 100  # at most this many new traces kept per second (0: no limit)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    dir: Path
    max_samples: int = 200            # comparison samples kept per route and verdict
    max_age: float = 7 * 86400.0
    max_traces: int = 2000


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_body: int | None = None   # None: unlimited (streamed)
    client_idle: float = 60.0             # an idle keep-alive connection, or a request head still arriving
    drain: float = 0.0                    # on SIGTERM: keep serving this long with /readyz at 503
    # schema.WIRE_LIMITS (defaults there): 431 beyond this head size; '_' header names; ';' path parameters
    max_request_head: int = field(kw_only=True)
    underscores_in_headers: str = field(kw_only=True)
    path_parameters: str = field(kw_only=True)


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

    def route(self, name: str) -> RouteSpec | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None
