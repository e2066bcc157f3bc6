"""The metric families read from the gateway's state at scrape time: shadow skips and queue, records dropped by
every background writer, guard judgements, circuit breakers, rollback pins and the config generation.

Each collaborator is handed in by the composition root; what is shown is what they hold now, never a copy kept
for the metrics' sake.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.proxy.protect import Protection
from gateway.rollout.controller import Rollout
from gateway.routing.table import TableRef
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.telemetry.metrics import Metrics, counter_family, gauge_family
from gateway.telemetry.stats import StatsRegistry

GUARD_STATES = {"healthy": 0, "inconclusive": 1, "failing": 2}
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "half_open": 1, "open": 2}


class Dropping(Protocol):
    dropped: int


class StateGauges:
    def __init__(self, tables: TableRef, rollout: Rollout, protection: Protection, stats: StatsRegistry,
                 shadow: ShadowDispatcher, writers: Mapping[str, Dropping]) -> None:
        self.tables = tables
        self.rollout = rollout
        self.protection = protection
        self.stats = stats
        self.shadow = shadow
        self.writers = writers     # store name -> a background writer that counts what it dropped

    def __call__(self) -> Iterator[Metric]:
        skipped = CounterMetricFamily("strangler_shadow_skipped", "Requests not shadowed, by reason",
                                      labels=["route", "reason"])
        for route in sorted(self.stats.names()):
            for reason, n in sorted(self.stats.route(route).skipped.items()):
                skipped.add_metric([route, reason], n)
        yield skipped
        yield GaugeMetricFamily("strangler_shadow_queue_depth", "Shadow exchanges running or waiting",
                                value=self.shadow.depth)
        drops = sorted((name, writer.dropped) for name, writer in self.writers.items())
        yield counter_family("strangler_dropped", "Records dropped because a background queue was full",
                             ("store",), ((name,) for name, _ in drops), (n for _, n in drops))
        guards = {route: GUARD_STATES.get(j.state, 1) for route, j in self.rollout.guards.state.items()}
        yield gauge_family("strangler_guard_state", "Guard judgement: 0 healthy, 1 inconclusive, 2 failing",
                           ("route",), sorted(guards.items()))
        circuits = {b: CIRCUIT_STATES.get(s, 0) for b, s in self.protection.circuit_states().items()}
        yield gauge_family("strangler_circuit_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                           ("backend",), sorted(circuits.items()))
        table = self.tables.current
        yield gauge_family("strangler_route_rolled_back", "1 while the route is pinned to legacy by a rollback",
                           ("route",), ((r.name, 1 if self.rollout.pinned(r) else 0) for r in table.routes))
        yield GaugeMetricFamily("strangler_config_generation", "Generation of the routes.yaml being served",
                                value=table.generation)


class MetricsAPI:
    """``GET /metrics``: the Prometheus text format."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.metrics.handle)]
