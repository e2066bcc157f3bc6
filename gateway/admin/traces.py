"""The trace endpoints of the admin listener: the embedded OTLP collector and the trace viewer's API.

    POST /v1/traces            OTLP/HTTP, protobuf or JSON: the services export their spans here. Open without
                               the admin token (exporters are configured with an endpoint, not a secret; the
                               listener is loopback by default) and harmless: it only adds spans to a bounded
                               store.
    GET  /api/traces           recent traces, newest first; ``route=``, ``status=ok|error``, ``min_ms=``,
                               ``limit=`` (default 50)
    GET  /api/traces/{id}      ``{trace_id, spans: [{span_id, parent_span_id, name, service, kind, start_ns,
                               end_ns, attributes, status}]}``

Decoding and database reads run in worker threads, so a large export or a slow read never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from gateway.errors import problem
from gateway.stores import trace_records
from gateway.stores.api import TraceStore
from gateway.telemetry import otlp
from gateway.telemetry.tracing import RELAY_HEADER

OTLP_PATH = "/v1/traces"
MAX_EXPORT = 32 * 1024 * 1024
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class TraceAPI:
    def __init__(self, store: TraceStore, instance: str) -> None:
        self.store = store
        self.instance = instance    # this gateway's relay id: spans it exported itself are not exported again

    def routes(self) -> list[web.RouteDef]:
        return [web.post(OTLP_PATH, self.receive), web.get("/api/traces", self.list),
                web.get("/api/traces/{trace_id}", self.get)]

    async def receive(self, request: web.Request) -> web.Response:
        content_type = request.content_type
        if content_type not in (otlp.PROTOBUF, otlp.JSON):
            return problem(415, "Unsupported Media Type",
                           f"OTLP/HTTP bodies are {otlp.PROTOBUF} or {otlp.JSON}, not {content_type!r}", "otlp")
        # Read the stream directly: the admin app's 1 MiB body limit is too small for a full export batch.
        body = await request.content.read(MAX_EXPORT + 1)
        if len(body) > MAX_EXPORT:
            return problem(413, "Payload Too Large", f"an OTLP export is limited to {MAX_EXPORT} bytes", "otlp")
        try:
            rows = await asyncio.to_thread(otlp.decode, content_type, body)
        except otlp.OTLPError as exc:
            return problem(400, "Bad Request", str(exc), "otlp")
        own = request.headers.get(RELAY_HEADER) == self.instance
        kept = not rows or self.store.put(trace_records.Received(rows, export=not own))
        rejected = 0 if kept else len(rows)
        return web.Response(body=otlp.response(content_type, rejected, "trace store queue full" if rejected else ""),
                            content_type=content_type)

    async def list(self, request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        if status not in (None, "ok", "error"):
            raise web.HTTPBadRequest(text="status must be ok or error")
        min_ms = _number(request, "min_ms")
        limit = int(min(1000, max(1, _number(request, "limit") or 50)))
        rows = await asyncio.to_thread(self.store.list_traces, route=request.query.get("route") or None,
                                       status=status, min_ms=min_ms, limit=limit)
        return web.json_response(rows)

    async def get(self, request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"].strip().lower()
        if not _TRACE_ID.fullmatch(trace_id):
            raise web.HTTPBadRequest(text="a trace id is 32 hex digits (the X-Trace-Id response header)")
        found = await asyncio.to_thread(self.store.get_trace, trace_id)
        if found is None:
            raise web.HTTPNotFound(text=f"no trace {trace_id} (not sampled, not yet written, or evicted: the store "
                                        f"keeps the last {self.store.max_traces} traces)")
        return web.json_response(found)


def _number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be a number") from exc
    if value < 0:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must not be negative")
    return value
