"""Prometheus metrics of one gateway (``GET /metrics`` on the admin listener, text exposition format).

The request path only bumps plain counters: a dict entry per label set and a list of bucket counts per histogram
(a ``bisect`` and two additions; no locks, no label validation, everything runs on the event loop). The
prometheus-client library only comes in at scrape time, through a custom collector that turns these counters and
the gateway's own state into metric families; families that read other collaborators' state (shadow queue,
stores, guards, circuits, pins) are added as ``sources`` by the composition root (``gateway.admin.gauges``). The registry belongs to the
``Metrics`` object, not to the process, so several gateways (tests, workers) never share series.

    strangler_requests_total{route,stage,backend,status_class}       counter
    strangler_request_duration_seconds{route}                         histogram, client-facing time in the gateway
    strangler_upstream_duration_seconds{backend,purpose}              histogram, primary and shadow exchanges
    strangler_shadow_verdicts_total{route,verdict}                    counter
    strangler_shadow_skipped_total{route,reason}                      counter
    strangler_shadow_queue_depth                                      gauge
    strangler_dropped_total{store}                                    counter (comparisons, traces, access log)
    strangler_guard_state{route}                                      gauge 0 healthy, 1 inconclusive, 2 failing
    strangler_circuit_state{backend}                                  gauge 0 closed, 1 half-open, 2 open
    strangler_route_rolled_back{route}                                gauge 1 while pinned to legacy
    strangler_config_generation, strangler_reloads_total{result}      gauge, counter

With ``--workers N`` each worker counts its own requests and the admin listener (worker 0) shows worker 0's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

Source = Callable[[], Iterable[Metric]]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: sub-millisecond steps where a proxy's own time lives, up to the longest sensible upstream timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)   # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: the first bound >= value, i.e. Prometheus' "le" bucket.
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def observe_many(self, values: list[float]) -> None:
        counts = self.counts
        for seconds in values:
            counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += sum(values)

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*map(_fmt, BUCKETS), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class Series:
    """The counters one kind of request (route, stage, backend, status class) adds to: ``Metrics.request``
    without the lookups. The upstream histogram is made at the first upstream time, so a kind that never reached
    its backend adds no series for it."""

    __slots__ = ("metrics", "key", "latency", "upstream")

    def __init__(self, metrics: Metrics, key: tuple[str, str, str, int], latency: Histogram) -> None:
        self.metrics = metrics
        self.key = key
        self.latency = latency
        self.upstream: Histogram | None = None

    def add_batch(self, latencies: list[float], upstream_times: list[float]) -> None:
        """Requests of this kind: their latencies, and the upstream times of those that reached the backend."""
        requests = self.metrics.requests
        requests[self.key] = requests.get(self.key, 0) + len(latencies)
        self.latency.observe_many(latencies)
        if upstream_times:
            upstream = self.upstream
            if upstream is None:
                upstream = self.upstream = self.metrics.upstream_histogram(self.key[2], "primary")
            upstream.observe_many(upstream_times)


def _fmt(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.upstream_latency: dict[tuple[str, str], Histogram] = {}
        self.verdicts: dict[tuple[str, str], int] = {}
        # Families built at scrape time from the state of other collaborators (the composition root adds them).
        self.sources: list[Source] = []
        self.reloads = {"ok": 0, "failed": 0}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))  # type: ignore[arg-type]

    # -- the request path ------------------------------------------------------------------------------------------

    def request(self, route: str, stage: str, backend: str, status: int, seconds: float,
                upstream_seconds: float) -> None:
        upstream_times = [upstream_seconds] if upstream_seconds else []
        self.series(route, stage, backend, status).add_batch([seconds], upstream_times)

    def series(self, route: str, stage: str, backend: str, status: int) -> Series:
        """What a request of one kind updates, looked up once: the recorder keeps it per kind."""
        key = (route, stage, backend, status // 100 if 100 <= status < 600 else 0)
        latency = self.latency.get(route)
        if latency is None:
            latency = self.latency[route] = Histogram()
        return Series(self, key, latency)

    def upstream(self, backend: str, purpose: str, seconds: float) -> None:
        self.upstream_histogram(backend, purpose).observe(seconds)

    def upstream_histogram(self, backend: str, purpose: str) -> Histogram:
        hist = self.upstream_latency.get((backend, purpose))
        if hist is None:
            hist = self.upstream_latency[(backend, purpose)] = Histogram()
        return hist

    # -- events ----------------------------------------------------------------------------------------------------

    def verdict(self, route: str, verdict: str) -> None:
        key = (route, verdict)
        self.verdicts[key] = self.verdicts.get(key, 0) + 1

    def reloaded(self, ok: bool) -> None:
        self.reloads["ok" if ok else "failed"] += 1

    # -- exposition ------------------------------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})


class _Collector:
    """Builds the metric families from the counters at scrape time (prometheus-client's custom collector)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield counter_family("strangler_requests",
                             "Requests answered, by route, effective stage, backend, status class",
                             ("route", "stage", "backend", "status_class"),
                             ((r, s, b, STATUS_CLASSES[c]) for r, s, b, c in m.requests), m.requests.values())
        h = HistogramMetricFamily("strangler_request_duration_seconds",
                                  "Time from request to the end of the response, in the gateway", labels=["route"])
        for route, hist in sorted(m.latency.items()):
            h.add_metric([route], hist.cumulative(), hist.sum)
        yield h
        h = HistogramMetricFamily("strangler_upstream_duration_seconds",
                                  "Upstream exchange time (headers and body), by backend and purpose",
                                  labels=["backend", "purpose"])
        for (backend, purpose), hist in sorted(m.upstream_latency.items()):
            h.add_metric([backend, purpose], hist.cumulative(), hist.sum)
        yield h
        yield counter_family("strangler_shadow_verdicts", "Shadow comparisons by verdict", ("route", "verdict"),
                             m.verdicts.keys(), m.verdicts.values())
        yield counter_family("strangler_reloads", "Config reloads by result", ("result",), [("ok",), ("failed",)],
                             [m.reloads["ok"], m.reloads["failed"]])
        for source in m.sources:
            yield from source()


def counter_family(name: str, doc: str, labels: tuple[str, ...], keys: Any, values: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in zip(keys, values, strict=False):
        family.add_metric(list(key), value)
    return family


def gauge_family(name: str, doc: str, labels: tuple[str, ...], items: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in items:
        family.add_metric([key], value)
    return family
