"""The gateway's own spans: recorded on the request path for almost nothing, built and exported off it.

Per request (``PublicHandler``):

    start(request)          -> TraceContext: trace and span ids (continuing a valid inbound ``traceparent``, with
                               its sampling decision); for a sampled request a RequestSpan, which also records
                               the start time. It becomes the current span for logs
                               (``observability.tracing.CURRENT``)
    span.attempt(backend)   -> the ``traceparent`` value for one upstream attempt (a CLIENT span when sampled)
    span.attempt_end(...)      the attempt's status
    finish(span, ...)          end time, route, decision and outcome are attached; a sampled span is queued

    child(span, name, ...)  -> ChildSpan: the shadow exchange (``shadow ROUTE``, ``strangler.shadow=true``, its
                               verdict) and the noise check, parented to the request's SERVER span

Why not the SDK's ``Span`` here: creating and ending an SDK span with a dozen attributes costs about 20 us (each
attribute is validated and copied under a lock), a tenth of the gateway's whole budget per request. A
``RequestSpan`` is a slotted object that keeps references to what the request computed anyway (route, decision,
outcome); names and attributes are only built in the trace store's writer thread (``rows()``), and only for
sampled requests. An unsampled request creates no span at all: a ``TraceContext`` holds its ids, and it costs two
random numbers and a string format (its ``traceparent`` still goes upstream with the sampled flag off, so the
services do not start traces of their own).

From the writer thread the rows go to the embedded store and, when the standard ``OTEL_EXPORTER_OTLP_*`` variables
name a collector, to OpenTelemetry span processors as SDK ``ReadableSpan`` objects (``add_processor``; tests add
an in-memory exporter the same way).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.stores.trace_records import Row, decode_record, gateway_rows, pack_request
from gateway.stores.traces import TraceStore
from observability.tracing import (
    CURRENT,
    TRACEPARENT,
    format_traceparent,
    new_span_id,
    new_trace_id,
    otlp_processor,
    parse_traceparent,
    resource,
    sample_bound,
    service_name,
)

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.config.model import Backend, TracingSpec
    from gateway.errors import GatewayError
    from gateway.proxy.forward import Outcome
    from gateway.rollout.decision import Decision
    from gateway.routing.table import Route

# Marks the gateway's own exports, so spans it sends to its own collector are stored but not sent on again.
RELAY_HEADER = "X-Strangler-Relay"
_LOW_64 = (1 << 64) - 1
_SCOPE = InstrumentationScope("strangler.gateway")
_KINDS = {"server": SpanKind.SERVER, "client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL,
          "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER}


class Attempt:
    __slots__ = ("span_id", "backend", "start_ns", "end_ns", "status", "error")

    def __init__(self, span_id: int, backend: Backend) -> None:
        self.span_id = span_id
        self.backend = backend
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.status = 0
        self.error: GatewayError | None = None


class TraceContext:
    """The trace a request belongs to when it is not sampled: ids only, nothing recorded. Its ``traceparent`` still
    goes upstream (with the sampled flag off, so the services do not start traces of their own), ``X-Trace-Id``
    and the access log still name the trace, and a shadow copy continues it."""

    __slots__ = ("trace_id", "span_id", "parent_id", "sampled", "_hex", "_span_hex")

    def __init__(self, trace_id: int, parent_id: int, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_id = parent_id
        self.sampled = sampled
        self._hex: str | None = None
        self._span_hex: str | None = None

    @property
    def trace_hex(self) -> str:
        """The trace id as the ``X-Trace-Id`` header and the APIs show it (32 lowercase hex digits)."""
        if self._hex is None:
            self._hex = f"{self.trace_id:032x}"
        return self._hex

    @property
    def span_hex(self) -> str:
        """The span id as ``traceparent`` and the access log write it (16 lowercase hex digits)."""
        if self._span_hex is None:
            self._span_hex = f"{self.span_id:016x}"
        return self._span_hex

    def attempt(self, backend: Backend) -> str:
        """The ``traceparent`` for one upstream attempt: the request's own id is a valid parent for an unsampled
        trace."""
        return f"00-{self.trace_hex}-{self.span_hex}-00"

    def attempt_end(self, status: int, error: GatewayError | None = None) -> None:
        return None


class RequestSpan(TraceContext):
    """The SERVER span of one sampled request, with its upstream attempts."""

    __slots__ = ("start_ns", "end_ns", "method", "target", "scheme", "route", "decision", "outcome", "attempts",
                 "service")

    def __init__(self, trace_id: int, parent_id: int, sampled: bool, method: str, target: str, scheme: str,
                 service: str) -> None:
        super().__init__(trace_id, parent_id, sampled)
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.method = method
        self.target = target
        self.scheme = scheme
        self.service = service
        self.route: Route | None = None
        self.decision: Decision | None = None
        self.outcome: Outcome | None = None
        self.attempts: list[Attempt] = []

    def attempt(self, backend: Backend) -> str:
        """Open a CLIENT span for one upstream attempt; returns the ``traceparent`` to send with it."""
        attempt = Attempt(new_span_id(), backend)
        self.attempts.append(attempt)
        return f"00-{self.trace_hex}-{attempt.span_id:016x}-01"

    def attempt_end(self, status: int, error: GatewayError | None = None) -> None:
        if self.attempts:
            a = self.attempts[-1]
            a.end_ns = time.time_ns()
            a.status = status
            a.error = error

    def snapshot(self) -> tuple[Any, ...]:
        """The finished span as plain values (``gateway.stores.trace_records.pack_request`` says which). This, not the span,
        is what waits in the store's queue: nothing the request allocated outlives it, because objects kept for a
        second would reach the collector's oldest generation and make every full collection slower."""
        route, decision, outcome = self.route, self.decision, self.outcome
        error = outcome.error if outcome is not None else None
        attempts = tuple([(a.span_id, a.backend.name, a.backend.scheme, a.backend.host, a.backend.port,
                           a.backend.base_path, a.start_ns, a.end_ns, a.status,
                           a.error.code if a.error is not None else None,
                           str(a.error.detail) if a.error is not None else None) for a in self.attempts])
        if decision is not None:
            stage, backend, side = decision.effective_stage, decision.backend.name, decision.side
            shadow_to = decision.shadow_to.name if decision.shadow_to is not None else None
        else:
            stage = backend = side = shadow_to = None
        return (self.trace_id, self.span_id, self.parent_id, self.start_ns, self.end_ns or time.time_ns(),
                self.service, self.method, self.target, self.scheme,
                route.name if route is not None else None, _http_route(route) if route is not None else None,
                stage, backend, side, shadow_to,
                outcome.status if outcome is not None else 0, outcome.bytes_out if outcome is not None else 0,
                error.code if error is not None else None, str(error.detail) if error is not None else None,
                error.status if error is not None else None, bool(outcome is not None and outcome.aborted),
                attempts)

    def rows(self) -> list[Row]:
        tkey, trace_id, _route, packed = pack_request(self.snapshot())
        return gateway_rows(decode_record(tkey, trace_id, packed))


def _http_route(route: Route) -> str | None:
    spec = route.spec
    if spec is None:
        return None
    path = spec.match.path
    return path.value if path.kind in ("template", "exact") else None


class ChildSpan:
    """A span under a request's server span that outlives the request (the shadow exchange, the noise check)."""

    __slots__ = ("trace_id", "parent_id", "span_id", "sampled", "name", "kind", "service", "start_ns", "end_ns",
                 "attributes", "failed")
    export = True

    def __init__(self, parent: TraceContext | None, name: str, service: str, attributes: dict[str, Any]) -> None:
        if parent is not None:
            self.trace_id, self.parent_id, self.sampled = parent.trace_id, parent.span_id, parent.sampled
        else:  # nothing to attach to (a replay): a new trace nobody asked to keep
            self.trace_id, self.parent_id, self.sampled = new_trace_id(), 0, False
        self.span_id = new_span_id()
        self.name = name
        self.kind = "client"
        self.service = service
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.attributes = attributes
        self.failed = False

    @property
    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)

    def end(self) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns()

    def rows(self) -> list[Row]:
        parent = f"{self.parent_id:016x}" if self.parent_id else ""
        return [Row(f"{self.trace_id:032x}", f"{self.span_id:016x}", parent, self.name, self.service, self.kind,
                    self.start_ns, self.end_ns or time.time_ns(), self.attributes,
                    "error" if self.failed else "unset")]


class GatewayTracer:
    """Owns sampling, the current-span context for logs, and where finished spans go."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.service = service_name("gateway")
        self.instance = secrets.token_hex(8)
        self.processors: list[SpanProcessor] = []
        self._spec: TracingSpec | None = None
        self._bound = 0
        self._resources: dict[str, Any] = {}
        self._rate_second = -1
        self._rate_count = 0

    # -- per request -----------------------------------------------------------------------------------------------

    def start(self, request: web.BaseRequest, spec: TracingSpec) -> TraceContext:
        """The request's trace: a ``RequestSpan`` that records it when sampled, else just its ids."""
        if spec is not self._spec:
            self._spec, self._bound = spec, sample_bound(spec.sample)
        header = request.headers.get(TRACEPARENT)
        parent = parse_traceparent(header) if header else None
        if parent is not None:
            # Parent-based: a caller's decision is kept, for the same reason every service keeps ours.
            trace_id, parent_id, sampled = parent
        else:
            trace_id, parent_id = new_trace_id(), 0
            sampled = (trace_id & _LOW_64) < self._bound and self._within_rate(spec.max_per_second)
        span = (RequestSpan(trace_id, parent_id, True, request.method, request.raw_path, request.scheme,
                            self.service) if sampled else TraceContext(trace_id, parent_id, False))
        CURRENT.set(span)
        return span

    def _within_rate(self, limit: int) -> bool:
        """A rate-limiting root sampler on top of the ratio (as Jaeger's and X-Ray's): every trace is kept at
        ordinary rates, and under heavy load at most ``limit`` new traces a second, so tracing costs a bounded
        amount whatever the traffic (the trace store keeps only the latest ``max_traces`` anyway). A caller's
        sampled ``traceparent`` is always honoured."""
        if not limit:
            return True
        second = int(time.monotonic())
        if second != self._rate_second:
            self._rate_second, self._rate_count = second, 0
        if self._rate_count >= limit:
            return False
        self._rate_count += 1
        return True

    def finish(self, span: TraceContext, route: Route | None, decision: Decision | None,
               outcome: Outcome | None) -> None:
        if isinstance(span, RequestSpan):
            span.end_ns = time.time_ns()
            span.route, span.decision, span.outcome = route, decision, outcome
            self.store.put(span.snapshot())

    def child(self, parent: TraceContext | None, name: str, attributes: dict[str, Any]) -> ChildSpan:
        return ChildSpan(parent, name, self.service, attributes)

    def shadow_span(self, tap: Any) -> ChildSpan:
        """The shadow exchange of a ``ShadowTap``: a CLIENT span beside the primary, under the server span."""
        return self._exchange_span(tap, f"shadow {tap.route.name}", tap.target_backend, {"strangler.shadow": True})

    def noise_span(self, tap: Any) -> ChildSpan:
        """The second legacy request that learns noisy fields (it carries ``X-Shadow: 1`` too)."""
        return self._exchange_span(tap, f"noise check {tap.route.name}", tap.primary_backend,
                                   {"strangler.shadow": True, "strangler.noise_check": True})

    def _exchange_span(self, tap: Any, name: str, backend: Backend, attrs: dict[str, Any]) -> ChildSpan:
        b = backend
        attrs.update({"strangler.route": tap.route.name, "strangler.backend": b.name,
                      "http.request.method": tap.method, "server.address": b.host, "server.port": b.port,
                      "url.full": f"{b.origin}{b.base_path}{tap.raw_target}"})
        return ChildSpan(getattr(tap, "trace", None), name, self.service, attrs)

    def exchange_done(self, span: ChildSpan, status: int, error: str | None, verdict: str | None = None) -> None:
        """Attach what the exchange gave (status, error, the comparison verdict) and queue the span."""
        span.end()
        attrs = span.attributes
        if status:
            attrs["http.response.status_code"] = status
        if verdict:
            attrs["strangler.verdict"] = verdict
        if error:
            attrs["error.type"] = error.split(":", 1)[0]
            attrs["otel.status_description"] = error
        span.failed = bool(error) or status >= 500
        if span.sampled:
            self.store.put(span)

    # -- export ----------------------------------------------------------------------------------------------------

    def add_processor(self, processor: SpanProcessor) -> None:
        """Send every stored span (the gateway's and those the services sent here) to ``processor`` too."""
        if not self.processors:
            self.store.add_listener(self._export)  # only then are the gateway's spans expanded in the writer
        self.processors.append(processor)

    def export_to_collector(self) -> bool:
        """Add the OTLP exporter the standard environment variables describe, if they describe one."""
        processor = otlp_processor(headers={RELAY_HEADER: self.instance})
        if processor is None:
            return False
        self.add_processor(processor)
        return True

    def _export(self, rows: list[Row]) -> None:
        if not self.processors:
            return
        for row in rows:
            span = self._readable(row)
            for processor in self.processors:
                processor.on_end(span)

    def _readable(self, r: Row) -> ReadableSpan:
        res = self._resources.get(r.service)
        if res is None:
            res = self._resources[r.service] = resource(r.service)
        trace_id = int(r.trace_id, 16)
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = SpanContext(trace_id, int(r.parent_span_id, 16), True, flags) if r.parent_span_id else None
        status = Status(StatusCode.ERROR, r.attributes.get("otel.status_description")) if r.status == "error" \
            else Status(StatusCode.OK) if r.status == "ok" else Status(StatusCode.UNSET)
        return ReadableSpan(name=r.name, context=SpanContext(trace_id, int(r.span_id, 16), False, flags),
                            parent=parent, resource=res, attributes=_otel_attributes(r.attributes),
                            kind=_KINDS.get(r.kind, SpanKind.INTERNAL), status=status, start_time=r.start_ns,
                            end_time=r.end_ns, instrumentation_scope=_SCOPE)

    def close(self) -> None:
        """Write what is queued, then let the processors flush (an external collector gets the last spans)."""
        self.store.close()
        for processor in self.processors:
            processor.shutdown()


def _otel_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """OTel attribute values are primitives or lists of them; nested values (from OTLP kvlists) become JSON."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value)):
            out[key] = json.dumps(value, default=str)
        elif value is not None:
            out[key] = value
    return out


def current() -> TraceContext | None:
    """The span of the request being handled (set by ``GatewayTracer.start``), if any."""
    return CURRENT.get()
