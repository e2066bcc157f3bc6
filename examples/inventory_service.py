"""A minimal new service for Strangler: the inventory feature, written from scratch (docs/services.md).

What it shows, each in a few lines: the ``X-Served-By`` header, a dry run for ``X-Shadow: 1``, replayed writes
answered once for an ``Idempotency-Key``, a mirrored write (``X-Strangler-Sync: 1``) applied and never passed on,
and a trace continued from ``traceparent`` and exported over OTLP to the gateway's admin listener.

    python examples/inventory_service.py --port 8103 [--legacy-db .strangler/demo/legacy.db]

It needs only what Strangler itself installs (aiohttp and the OpenTelemetry SDK). The data lives in memory,
copied from the monolith's database at start when ``--legacy-db`` is given.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

NAME = os.environ.get("OTEL_SERVICE_NAME", "inventory")
STOCK: web.AppKey[dict[int, dict[str, Any]]] = web.AppKey("stock", dict)
ANSWERED: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("answered", dict)


def setup_tracing() -> None:
    """Export spans where OTEL_EXPORTER_OTLP_ENDPOINT says (the demo points it at the gateway's admin listener)."""
    provider = TracerProvider(resource=Resource.create({"service.name": NAME}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)


@web.middleware
async def served_by_and_traced(request: web.Request, handler: Any) -> web.StreamResponse:
    # Continue the gateway's trace (W3C traceparent), so the service's span sits under the gateway's call.
    parent = TraceContextTextMapPropagator().extract(dict(request.headers))
    tracer = trace.get_tracer("inventory")
    with tracer.start_as_current_span(f"{request.method} {request.path}", context=parent,
                                      kind=trace.SpanKind.SERVER) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
    response.headers["X-Served-By"] = NAME
    return response


async def get_item(request: web.Request) -> web.Response:
    product_id = int(request.match_info["id"])
    item = request.app[STOCK].get(product_id)
    if item is None:
        return web.json_response({"type": "about:blank", "title": "Not Found", "status": 404,
                                  "detail": f"no product {product_id}"}, status=404,
                                 content_type="application/problem+json")
    return web.json_response(item)


async def take_stock(request: web.Request) -> web.Response:
    """POST {"quantity": n}: take n items out of stock."""
    key = request.headers.get("Idempotency-Key")
    if key and key in request.app[ANSWERED]:
        return web.json_response(request.app[ANSWERED][key])   # a retry: same answer, nothing changes twice
    product_id = int(request.match_info["id"])
    body = await request.json()
    item = request.app[STOCK].get(product_id)
    if item is None or not isinstance(body.get("quantity"), int) or body["quantity"] < 1:
        raise web.HTTPBadRequest(text="expected a known product and {\"quantity\": n >= 1}")
    answer = {**item, "stock": item["stock"] - body["quantity"]}
    if request.headers.get("X-Shadow") == "1":
        return web.json_response(answer)        # a shadow copy: answer as if, change nothing
    # A real write, or a mirrored one (X-Strangler-Sync: 1): apply it. This service never forwards writes, so
    # there is nothing to suppress for a mirrored one; a service that does must not pass it on.
    request.app[STOCK][product_id] = answer
    if key:
        request.app[ANSWERED][key] = answer
    return web.json_response(answer)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def load_stock(legacy_db: str | None) -> dict[int, dict[str, Any]]:
    if not legacy_db:
        return {}
    db = sqlite3.connect(f"file:{legacy_db}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute("SELECT product_id, stock, warehouse, updated_at FROM inventory").fetchall()
    finally:
        db.close()
    return {r["product_id"]: dict(r) for r in rows}


def create_app(legacy_db: str | None = None) -> web.Application:
    app = web.Application(middlewares=[served_by_and_traced])
    app[STOCK] = load_stock(legacy_db)
    app[ANSWERED] = {}
    app.router.add_get(r"/api/inventory/{id:\d+}", get_item)
    app.router.add_post(r"/api/inventory/{id:\d+}", take_stock)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--legacy-db", help="copy the stock from the monolith's database at start")
    args = parser.parse_args()
    setup_tracing()
    web.run_app(create_app(args.legacy_db), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
