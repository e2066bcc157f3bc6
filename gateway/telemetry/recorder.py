"""What the gateway tells about each request: statistics windows, its trace span, metrics, the access-log line.

The request handler calls ``start`` first (the span exists before anything can fail, so even a refused request
has a trace id) and ``request_done`` once the response is complete; refusals before a route is known go through
``refused``. ``request_done`` only appends one tuple: ``fold`` applies a loop turn's requests to the statistics
windows, the metrics and the access log in one batch, after their responses went out (the access log's JSON
lines are formatted there, a turn's worth at a time). The expensive parts (span attributes, SQLite, writing the
log) happen in background threads (``gateway.stores.traces``, ``observability.logging.AccessLog``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from gateway.proxy.forward import Outcome
from gateway.telemetry.metrics import Metrics, Series
from gateway.telemetry.stats import StatsRegistry, Window
from gateway.telemetry.tracing import ChildSpan, GatewayTracer, TraceContext
from observability.logging import AccessLog
from observability.tracing import TRACE_ID_HEADER

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.config.model import Config
    from gateway.errors import GatewayError
    from gateway.rollout.decision import Decision
    from gateway.routing.table import Route


class Recorder:
    def __init__(self, tracing: GatewayTracer, metrics: Metrics, access: AccessLog, stats: StatsRegistry) -> None:
        self.tracing = tracing
        self.metrics = metrics
        self.access = access
        self.stats = stats
        self._exporting = False
        # Requests finished and not folded yet: (access-log entry, side, error, upstream seconds).
        self._finished: list[tuple[tuple[Any, ...], str, bool, float]] = []
        self._folding = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict[tuple[str, str, str, str, int], tuple[Window, Series]] = {}

    # -- per request -----------------------------------------------------------------------------------------------

    def start(self, request: web.BaseRequest, cfg: Config) -> TraceContext:
        return self.tracing.start(request, cfg.tracing)

    @staticmethod
    def trace_header(span: TraceContext, cfg: Config) -> tuple[str, str] | None:
        """``X-Trace-Id`` for the response, unless routes.yaml ``tracing.response_header`` is false."""
        return (TRACE_ID_HEADER, span.trace_hex) if cfg.tracing.response_header else None

    def request_done(self, span: TraceContext, route: Route, decision: Decision, request: web.BaseRequest,
                     outcome: Outcome, elapsed: float) -> None:
        """One append: the statistics, the metrics and the access log are brought up to date by ``fold``, after
        the response went out."""
        status = outcome.status
        self._finished.append(((time.time_ns(), request.method, request.raw_path, route.name,
                                decision.effective_stage, outcome.backend, status, elapsed, outcome.bytes_out,
                                span.trace_hex, span.span_hex),
                               "legacy" if outcome.fell_back else decision.side,
                               status >= 500 or outcome.error is not None, outcome.upstream_seconds))
        if not self._folding:
            self._folding = True
            loop = self._loop
            if loop is None or loop.is_closed():   # asked once: before Python 3.12 each ask is a getpid() call
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.fold)
        if span.sampled:
            self.tracing.finish(span, route, decision, outcome)

    def fold(self) -> None:
        """Apply the requests finished since the last fold (armed once per loop turn, so it runs before any later
        callback reads the statistics: the guard's judgement, the admin API, a worker's publication)."""
        self._folding = False
        batch, self._finished = self._finished, []
        # A turn's requests are mostly of a few kinds: each kind's window and series take theirs in one call.
        kinds: dict[tuple[str, str, str, str, int], tuple[list[float], list[float], list[int]]] = {}
        for entry, side, error, upstream in batch:
            key = (entry[3], side, entry[4], entry[5], entry[6])   # route, side, stage, backend, status
            kind = kinds.get(key)
            if kind is None:
                kind = kinds[key] = ([], [], [0])
            kind[0].append(entry[7])
            if upstream:
                kind[1].append(upstream)
            if error:
                kind[2][0] += 1
        lanes = self._lanes
        for key, (latencies, upstream_times, errors) in kinds.items():
            lane = lanes.get(key)
            if lane is None:
                lane = self._lane(key)
            lane[0].request_batch(latencies, errors[0])
            lane[1].add_batch(latencies, upstream_times)
        if self.access.enabled():
            self.access.put_many([item[0] for item in batch])

    def _lane(self, key: tuple[str, str, str, str, int]) -> tuple[Window, Series]:
        """The statistics window and the metric series one kind of request counts in (neither is ever replaced,
        so they are looked up once per kind)."""
        if len(self._lanes) > 10_000:   # route names come and go with reloads
            self._lanes.clear()
        route, side, stage, backend, status = key
        lane = self._lanes[key] = (self.stats.route(route).side(side), self.metrics.series(route, stage, backend,
                                                                                            status))
        return lane

    def attempt_failed(self, route: Route, side: str) -> None:
        """A failed attempt the user did not see (a fallback retried it): it still counts against its side."""
        self.stats.route(route.name).side(side).request(0.0, True)

    def refused(self, span: TraceContext, request: web.BaseRequest, error: GatewayError, elapsed: float) -> None:
        """A request answered by the gateway itself before any route was chosen (bad path, body too large)."""
        if span.sampled:
            outcome = Outcome("")
            outcome.status, outcome.error = error.status, error
            self.tracing.finish(span, None, None, outcome)
        self.metrics.request("none", "none", "none", error.status, elapsed, 0.0)
        if self.access.enabled():
            self.access.emit((time.time_ns(), request.method, request.raw_path, None, None, None, error.status,
                              elapsed, 0, span.trace_hex, span.span_hex))

    def held(self, span: TraceContext, route: Route, request: web.BaseRequest, status: int, elapsed: float) -> None:
        """A request the route's waiting room answered itself (in line, or the line is full)."""
        if span.sampled:
            outcome = Outcome("")
            outcome.status = status
            self.tracing.finish(span, None, None, outcome)
        self.metrics.request(route.name, "waiting_room", "none", status, elapsed, 0.0)
        if self.access.enabled():
            self.access.emit((time.time_ns(), request.method, request.raw_path, route.name, "waiting_room", None,
                              status, elapsed, 0, span.trace_hex, span.span_hex))

    def shadow_done(self, route: str, target: str, span: ChildSpan, status: int, error: str | None, verdict: str,
                    seconds: float) -> None:
        self.tracing.exchange_done(span, status, error, verdict)
        self.metrics.upstream(target, "shadow", seconds)
        self.metrics.verdict(route, verdict)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start_export(self) -> None:
        """Also send spans to the collector the standard OTEL_EXPORTER_OTLP_* variables name, if any."""
        if not self._exporting:
            self._exporting = self.tracing.export_to_collector()

    def close(self) -> None:
        self.fold()
        self.tracing.close()
        self.access.close()
