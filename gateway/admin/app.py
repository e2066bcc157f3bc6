"""The admin API (and, later, the web console) on its own listener, loopback by default.

Reads are open to whoever can reach the listener; every mutation (POST) needs ``Authorization: Bearer <token>``.
Nothing mutates on GET. Database reads run in a worker thread so a slow query never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.admin import console
from gateway.admin.hosts import admin_access
from gateway.admin.traces import OTLP_PATH, TraceAPI
from gateway.errors import problem
from gateway.routing.table import Route, describe_match
from gateway.stores import diffs as diffstore

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The OTLP receiver is open: exporters know an endpoint, not a token, and it only feeds a bounded store.
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path == OTLP_PATH:
        return await handler(request)
    expected = request.app[GATEWAY].token
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        return problem(401, "Unauthorized", "this action needs `Authorization: Bearer <token>` (the token is in "
                       "STRANGLER_ADMIN_TOKEN or the admin.token file the gateway wrote in its store directory)",
                       "unauthorized")
    return await handler(request)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/problem+json":
            return problem(exc.status, exc.reason, exc.text or exc.reason, "admin")
        raise


def create_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[admin_access(gateway), problems, require_token])
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/config", get_config)
    app.router.add_post("/api/reload", post_reload)
    app.router.add_get("/api/routes", get_routes)
    app.router.add_post("/api/routes/{name}/rollback", post_rollback)
    app.router.add_post("/api/routes/{name}/resume", post_resume)
    app.router.add_post("/api/routes/{name}/replay", post_replay)
    app.router.add_get("/api/explain", get_explain)
    app.router.add_get("/api/diffs", get_diffs)
    app.router.add_get("/api/diffs/{id}", get_diff)
    app.router.add_get("/api/report", get_report)
    app.router.add_get("/api/history", get_history)
    app.router.add_routes(TraceAPI(gateway).routes())
    app.router.add_get("/metrics", gateway.metrics.handle)
    app.router.add_get("/", console.index)
    app.router.add_get("/console/{path}", console.asset)
    return app


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = _gw(request)
    if not gw.ready.is_set() or gw.stopping.is_set():
        return problem(503, "Not ready", "the gateway is starting or stopping", "not-ready")
    return web.json_response({"status": "ready", "generation": gw.table.generation})


def config_status(gw: Gateway) -> dict[str, Any]:
    table = gw.table
    last = gw.reloader.last
    return {
        "generation": table.generation,
        "path": str(table.config.path),
        "digest": table.config.digest,
        "loaded_at": gw.loaded_at,
        "listen": list(gw.bound.get("public", gw.listen)),
        "admin": list(gw.bound.get("admin", gw.admin_listen)),
        "warnings": list(table.config.warnings),
        "last_reload": last.as_dict() if last else {"ok": True, "at": gw.loaded_at, "error": None,
                                                    "generation": table.generation, "changed": True,
                                                    "actor": "start"},
    }


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(config_status(_gw(request)))


async def post_reload(request: web.Request) -> web.Response:
    status = await _gw(request).reloader.reload("admin")
    return web.json_response(status.as_dict(), status=200 if status.ok else 422)


def route_view(gw: Gateway, route: Route) -> dict[str, Any]:
    spec = route.spec
    pin = gw.state.pins.get(route.name)
    stats = gw.stats.route(route.name)
    effective = "legacy" if pin else route.stage
    weight = gw.weight_for(route)
    if weight is None:
        weight = {"legacy": 0.0, "shadow": 0.0, "extracted": 100.0}.get(route.stage)
        if route.stage == "canary" and spec and spec.canary:
            weight = spec.canary.weight
    if pin:
        weight = 0.0
    shadow = stats.shadow.summary(60.0)
    return {
        "name": route.name,
        "match": describe_match(spec.match) if spec else "(anything no route matches)",
        "stage": route.stage,
        "effective_stage": effective,
        "to": route.to.name if route.to else None,
        "legacy": route.legacy.name,
        "weight": weight,
        "rolled_back": pin.as_dict() if pin else None,
        "line": spec.line if spec else None,
        "priority": spec.priority if spec else None,
        "shadow_match_rate": (None if not shadow.compared else round(100.0 - shadow.mismatch_rate, 2)),
        "stats": stats.as_dict(60.0),
        # Requests per second over the last minute, oldest first: the console's sparklines.
        "series": {"legacy": stats.legacy.series(60), "extracted": stats.extracted.series(60),
                   "shadow": stats.shadow.series(60)},
    }


async def get_routes(request: web.Request) -> web.Response:
    gw = _gw(request)
    table = gw.table
    views = [route_view(gw, r) for r in (*table.routes, table.fallback)]
    return web.json_response(views)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def _route_or_404(gw: Gateway, name: str) -> Route:
    route = gw.table.by_name.get(name)
    if route is None:
        raise web.HTTPNotFound(text=f"no route named {name!r}; routes: {', '.join(gw.table.by_name) or 'none'}")
    return route


def _actor(body: dict[str, Any]) -> str:
    """Who asked, for history: the CLI and the console say so; anything else is the admin API."""
    actor = str(body.get("actor") or "admin")
    return actor if actor in ("cli", "admin", "console") else "admin"


async def post_rollback(request: web.Request) -> web.Response:
    gw = _gw(request)
    route = _route_or_404(gw, request.match_info["name"])
    body = await _json_body(request)
    reason = str(body.get("reason") or "manual rollback")
    actor = _actor(body)
    if route.to is None or route.stage == "legacy":
        raise web.HTTPConflict(text=f"route {route.name!r} is in stage legacy: the monolith already answers it, "
                                    "so there is nothing to roll back")
    if route.name in gw.state.pins:
        view = route_view(gw, route)
        view["already_rolled_back"] = True     # idempotent: the first pin (and its reason) stands
        return web.json_response(view)
    gw.rollback(route, actor, reason)
    return web.json_response(route_view(gw, route))


async def post_resume(request: web.Request) -> web.Response:
    gw = _gw(request)
    route = _route_or_404(gw, request.match_info["name"])
    body = await _json_body(request)
    actor = _actor(body)
    was_pinned = gw.resume(route, actor, str(body.get("reason") or ""))
    view = route_view(gw, route)
    view["was_rolled_back"] = was_pinned
    return web.json_response(view)


async def post_replay(request: web.Request) -> web.Response:
    gw = _gw(request)
    route = _route_or_404(gw, request.match_info["name"])
    if route.to is None:
        raise web.HTTPConflict(text=f"route {route.name!r} has no extracted backend (`to:`) to replay against")
    limit = _int_param(request, "limit", 20, 1, 1000)
    verdict = request.query.get("verdict") or None

    def load() -> list[dict[str, Any]]:
        db = gw.shadow.store.reader()
        try:
            sql = "SELECT id FROM samples WHERE route = ? AND replay = 0"
            args: list[Any] = [route.name]
            if verdict:
                sql += " AND verdict = ?"
                args.append(verdict)
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
            return [s for s in (diffstore.get_sample(db, r[0]) for r in rows) if s]
        finally:
            db.close()

    samples = await asyncio.to_thread(load)
    results = []
    for sample in samples:
        rec = await gw.shadow.replay(sample, route)
        results.append({"sample": sample["id"], "was": sample["verdict"], "now": rec.verdict,
                        "differences": rec.differences, "reason": rec.reason})
    summary: dict[str, int] = {}
    for r in results:
        summary[r["now"]] = summary.get(r["now"], 0) + 1
    return web.json_response({"route": route.name, "replayed": len(results), "verdicts": summary,
                              "results": results})


async def get_explain(request: web.Request) -> web.Response:
    gw = _gw(request)
    method = request.query.get("method", "GET").upper()
    path = request.query.get("path", "/")
    headers = {}
    for h in request.query.getall("header", []):
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    from gateway.rollout.explain import explain

    return web.json_response(explain(gw.table, method, path, headers, gw.state.pins))


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be a whole number") from exc
    return max(low, min(high, value))


async def _read(gw: Gateway, fn: Callable[..., Any], *args: Any) -> Any:
    def run() -> Any:
        gw.shadow.store.flush(timeout=0.5)
        db = gw.shadow.store.reader()
        try:
            return fn(db, *args)
        finally:
            db.close()

    return await asyncio.to_thread(run)


async def get_diffs(request: web.Request) -> web.Response:
    gw = _gw(request)
    limit = _int_param(request, "limit", 50, 1, 1000)
    before = _int_param(request, "before", 0, 0, 2**62) or None
    rows = await _read(gw, diffstore.list_samples, request.query.get("route") or None,
                       request.query.get("verdict") or None, limit, before)
    return web.json_response(rows)


async def get_diff(request: web.Request) -> web.Response:
    gw = _gw(request)
    try:
        sample_id = int(request.match_info["id"])
    except ValueError as exc:
        raise web.HTTPBadRequest(text="a comparison id is a whole number") from exc
    if not 0 < sample_id < 2**63:   # ids are positive SQLite integers (64-bit): no other can exist, or be looked up
        raise web.HTTPNotFound(text=f"no comparison #{sample_id}")
    row = await _read(gw, diffstore.get_sample, sample_id)
    if row is None:
        raise web.HTTPNotFound(text=f"no comparison #{sample_id} (samples are kept within the store's bounds)")
    return web.json_response(row)


async def get_report(request: web.Request) -> web.Response:
    gw = _gw(request)
    stored = await _read(gw, diffstore.report)
    table = gw.table
    out = []
    for route in (*table.routes, table.fallback):
        stats = gw.stats.route(route.name)
        entry = stored.get(route.name, {"verdicts": {}, "skipped": {}, "fields": [], "noise": [],
                                        "noise_samples": 0, "compared": 0, "rates": {}})
        if route.is_fallback and not entry["compared"]:
            continue
        window = 300.0
        entry = {**entry, "route": route.name, "stage": route.stage,
                 "latency": {"legacy": _lat(stats.legacy.summary(window)),
                             "extracted": _lat(stats.extracted.summary(window)),
                             "shadow": _lat(stats.shadow.summary(window))},
                 "skipped_live": dict(stats.skipped)}
        out.append(entry)
    return web.json_response({"generated_at": time.time(), "routes": out,
                              "store": {"dropped": gw.shadow.store.dropped, "queue": gw.shadow.depth}})


def _lat(summary: Any) -> dict[str, Any]:
    d = summary.as_dict()
    return {"requests": d["requests"], "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"]}


async def get_history(request: web.Request) -> web.Response:
    gw = _gw(request)
    limit = _int_param(request, "limit", 200, 1, 5000)
    rows = await asyncio.to_thread(gw.state.history, request.query.get("route") or None, limit)
    return web.json_response(rows)
