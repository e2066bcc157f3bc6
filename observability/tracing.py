"""Tracing set-up shared by the gateway and every service: W3C trace context, sampling, OTLP export, and the
helpers the services call (a server-span middleware and a span per SQLite query).

The model, once for everything:

- A trace is one client request: the gateway's SERVER span is its root, each upstream attempt is a CLIENT span
  under it, the shadow copy is another CLIENT span under it, and each service continues the trace from the
  ``traceparent`` header it receives (W3C Trace Context, https://www.w3.org/TR/trace-context/) with a SERVER span
  of its own and a span per database query.
- Sampling is parent-based ratio sampling (the SDK's ``ParentBased(TraceIdRatioBased(rate))``): a request that
  arrives with a ``traceparent`` keeps its caller's decision; a new trace is kept when the low 64 bits of its id
  fall below ``rate * 2**64``. Every process applies the same rule to the same id, so a trace is either whole or
  absent. The gateway's rate is routes.yaml ``tracing.sample``; a service's is ``OTEL_TRACES_SAMPLER_ARG``
  (default 1.0: services keep what the gateway sends them).
- Export follows the standard OpenTelemetry variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is
  appended) or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is), ``..._HEADERS``, ``..._TIMEOUT``,
  ``..._COMPRESSION``; ``OTEL_TRACES_EXPORTER=none`` turns export off; ``OTEL_SERVICE_NAME`` renames a process.
  Without an endpoint nothing is exported (a service on its own has no collector to talk to).

The gateway records its own spans with a lighter mechanism (``gateway/tracing.py``) and uses the parsing and
sampling functions here; the services use the SDK directly.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from opentelemetry import trace
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
SHADOW_HEADER = "X-Shadow"
TRACE_ID_HEADER = "X-Trace-Id"

# The span the current request (or task) runs in, as the gateway records it: any object with integer ``trace_id``
# and ``span_id``. The log processor reads it; tasks and threads started from a request inherit it.
CURRENT: ContextVar[Any] = ContextVar("strangler_current_span", default=None)

# W3C Trace Context §3.2.2: lowercase hex only; a future version may append fields after a dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_LOW_64 = TraceIdRatioBased.TRACE_ID_LIMIT


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """``(trace_id, parent_span_id, sampled)`` of a valid header, else None (an invalid header starts a new trace,
    as §3.2.2.3 asks)."""
    if not value:
        return None
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def sample_bound(percent: float) -> int:
    """The ratio sampler's threshold for ``percent`` (0..100): keep a new trace when its low 64 bits are below."""
    return TraceIdRatioBased.get_bound_for_rate(min(1.0, max(0.0, percent / 100.0)))


def sampled(trace_id: int, bound: int) -> bool:
    """The root decision of ``TraceIdRatioBased``, without building a ``SamplingResult``."""
    return (trace_id & _LOW_64) < bound


# -- export ----------------------------------------------------------------------------------------------------


def otlp_endpoint_configured() -> bool:
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def otlp_processor(headers: dict[str, str] | None = None) -> SpanProcessor | None:
    """A ``BatchSpanProcessor`` exporting OTLP/HTTP protobuf where the standard variables say, or None.
    ``headers`` are added to those of ``OTEL_EXPORTER_OTLP_HEADERS``."""
    if not otlp_endpoint_configured():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The SDK's default flush interval is 5 s; one second keeps a trace viewable right after the request while
    # still batching. OTEL_BSP_SCHEDULE_DELAY, when set, wins (the processor reads it when no value is passed).
    delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else 1000
    return BatchSpanProcessor(OTLPSpanExporter(headers=headers), schedule_delay_millis=delay)


def service_name(default: str) -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or default


def resource(service: str) -> Resource:
    return Resource.create({"service.name": service})


def _env_ratio() -> float:
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG")
    try:
        return min(1.0, max(0.0, float(raw))) if raw else 1.0
    except ValueError:
        return 1.0


def setup_service_tracing(service: str) -> TracerProvider:
    """Install the process-wide tracer provider of a service (legacy_app, extracted.*): parent-based ratio
    sampling and OTLP export in the background. Call once, at start."""
    # OTEL_TRACES_SAMPLER, when set, is the user's explicit choice; the SDK reads it when no sampler is given.
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(TraceIdRatioBased(_env_ratio()))
    provider = TracerProvider(resource=resource(service_name(service)), sampler=sampler)
    processor = otlp_processor()
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


# -- what the services call ------------------------------------------------------------------------------------

_propagator = TraceContextTextMapPropagator()
_getter = DefaultGetter()
_tracer = trace.get_tracer("strangler.service")  # a proxy until setup_service_tracing installs the provider


def server_span_middleware(service: str) -> Middleware:
    """A SERVER span per request, continuing the caller's ``traceparent``; outermost, so it sees every status."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        parent = _propagator.extract(request.headers, getter=_getter)
        info = request.match_info.route.resource
        template = info.canonical if info is not None else None
        attributes: dict[str, Any] = {"http.request.method": request.method, "url.path": request.path,
                                      "strangler.service": service}
        if template:
            attributes["http.route"] = template
        if request.headers.get(SHADOW_HEADER) == "1":
            # A shadow copy: the service answers as a dry run; marked so it stands out in the trace.
            attributes["strangler.shadow"] = True
        name = f"{request.method} {template}" if template else request.method
        with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                           set_status_on_exception=True) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))
            return response

    return traced


@contextlib.contextmanager
def db_span(query: str, operation: str, database: str = "main", *, dry_run: bool = False) -> Iterator[None]:
    """A CLIENT span around one SQLite call (``query`` names the function that runs the statements)."""
    attributes: dict[str, Any] = {"db.system.name": "sqlite", "db.operation.name": operation,
                                  "db.namespace": database, "db.query.summary": f"{operation} {query}"}
    if dry_run:
        attributes["strangler.dry_run"] = True
    with _tracer.start_as_current_span(f"sqlite {query}", kind=SpanKind.CLIENT, attributes=attributes,
                                       set_status_on_exception=True):
        yield
