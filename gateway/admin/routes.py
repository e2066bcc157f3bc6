"""Routes and their rollout: what serves each route now, rollback, resume, and ``explain``.

    GET  /api/routes                     [{name, match, stage, effective_stage, weight, extracted_share, step,
                                           serves, rolled_back, to, legacy, stats, series, ...}]
    POST /api/routes/{name}/rollback     {reason, actor}
    POST /api/routes/{name}/resume       {reason, actor}
    GET  /api/explain?method=&path=&header=Name:%20value

Every rollout figure comes from ``Rollout.view``: the console and the CLI show it, never recompute it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin.app import json_body
from gateway.admin.format import equal_rate
from gateway.admin.lookup import route_or_404
from gateway.rollout.controller import Rollout
from gateway.rollout.explain import explain
from gateway.routing.table import Route, TableRef, describe_match
from gateway.telemetry.stats import StatsRegistry

ACTORS = ("cli", "admin", "console")


class RoutesAPI:
    def __init__(self, tables: TableRef, rollout: Rollout, stats: StatsRegistry,
                 admission: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        self.tables = tables
        self.rollout = rollout
        self.stats = stats
        self.admission = admission     # the route's waiting room figures (``Rooms.view``), None without one

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/routes", self.get_routes),
                web.post("/api/routes/{name}/rollback", self.post_rollback),
                web.post("/api/routes/{name}/resume", self.post_resume),
                web.get("/api/explain", self.get_explain)]

    def view(self, route: Route) -> dict[str, Any]:
        spec = route.spec
        stats = self.stats.route(route.name)
        shadow = stats.shadow.summary(60.0)
        return {
            "name": route.name,
            "match": describe_match(spec.match) if spec else "(anything no route matches)",
            **self.rollout.view(route),
            "to": route.to.name if route.to else None,
            "legacy": route.legacy.name,
            "line": spec.line if spec else None,
            "priority": spec.priority if spec else None,
            # Match (answers equal for the migration) over the last minute's comparisons; the report gives the
            # same figure over its own window. Surfaces show ``text``: the rate with its window and denominator.
            "shadow_match": equal_rate(shadow.compared - shadow.mismatches, shadow.compared, "last 60s"),
            "shadow_match_rate": (None if not shadow.compared else round(100.0 - shadow.mismatch_rate, 2)),
            "admission": self.admission(route.name) if self.admission is not None else None,
            "stats": stats.as_dict(60.0),
            # Requests per second over the last minute, oldest first: the console's sparklines.
            "series": {"legacy": stats.legacy.series(60), "extracted": stats.extracted.series(60),
                       "shadow": stats.shadow.series(60)},
        }

    async def get_routes(self, request: web.Request) -> web.Response:
        table = self.tables.current
        return web.json_response([self.view(r) for r in (*table.routes, table.fallback)])

    def route_or_404(self, name: str) -> Route:
        route = route_or_404(self.tables, name)
        if route.is_fallback:
            raise web.HTTPConflict(text=f"{name!r} is the fallback (what no route matches): it is always served by "
                                        f"{route.legacy.name} and cannot be rolled back, resumed or replayed")
        return route

    async def post_rollback(self, request: web.Request) -> web.Response:
        route = self.route_or_404(request.match_info["name"])
        body = await json_body(request)
        if route.to is None or route.stage == "legacy":
            raise web.HTTPConflict(text=f"route {route.name!r} is in stage legacy: the monolith already answers "
                                        "it, so there is nothing to roll back")
        if self.rollout.pinned(route):
            view = self.view(route)
            view["already_rolled_back"] = True     # idempotent: the first pin (and its reason) stands
            return web.json_response(view)
        self.rollout.rollback(route, _actor(body), str(body.get("reason") or "manual rollback"))
        return web.json_response(self.view(route))

    async def post_resume(self, request: web.Request) -> web.Response:
        route = self.route_or_404(request.match_info["name"])
        body = await json_body(request)
        was_pinned = self.rollout.resume(route, _actor(body), str(body.get("reason") or ""))
        view = self.view(route)
        view["was_rolled_back"] = was_pinned
        return web.json_response(view)

    async def get_explain(self, request: web.Request) -> web.Response:
        method = request.query.get("method", "GET").upper()
        path = request.query.get("path", "/")
        headers = {}
        for h in request.query.getall("header", []):
            name, _, value = h.partition(":")
            headers[name.strip()] = value.strip()
        return web.json_response(explain(self.tables.current, method, path, headers, self.rollout))


def _actor(body: dict[str, Any]) -> str:
    """Who asked, for history: the CLI and the console say so; anything else is the admin API."""
    actor = str(body.get("actor") or "admin")
    return actor if actor in ACTORS else "admin"
