"""Shadow comparisons: recent samples, one sample whole, the per-route report, and replays.

    GET  /api/diffs?route=&verdict=&limit=&before=&since=&trace=
    GET  /api/diffs/{id}
    GET  /api/report?route=&since=      since: a duration (10m) or "reload" (see ``scope``)
    POST /api/routes/{name}/replay?limit=&verdict=
    POST /api/routes/{name}/clear       forget the route's stored results (after a fix)

Store reads run in a worker thread, so a slow query never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.admin.app import int_param
from gateway.admin.format import equal_rate
from gateway.admin.lookup import route_filter
from gateway.admin.routes import RoutesAPI
from gateway.admin.scope import parse_scope
from gateway.compare.coverage import ignored_by
from gateway.routing.table import Route, TableRef
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.stores.api import ComparisonStore
from gateway.telemetry.stats import RouteStats, StatsRegistry

REPORT_WINDOW = 300.0
EMPTY_ENTRY: dict[str, Any] = {"verdicts": {}, "skipped": {}, "fields": [], "noise": [], "noise_samples": 0,
                               "compared": 0, "rates": {}}


class DiffsAPI:
    def __init__(self, tables: TableRef, comparisons: ComparisonStore, shadow: ShadowDispatcher,
                 stats: StatsRegistry, routes: RoutesAPI) -> None:
        self.tables = tables
        self.comparisons = comparisons
        self.shadow = shadow
        self.stats = stats
        self.route_api = routes

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/diffs", self.get_diffs), web.get("/api/diffs/{id}", self.get_diff),
                web.get("/api/report", self.get_report),
                web.post("/api/routes/{name}/replay", self.post_replay),
                web.post("/api/routes/{name}/clear", self.post_clear)]

    async def get_diffs(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 50, 1, 1000)
        before = int_param(request, "before", 0, 0, 2**62) or None
        route = route_filter(self.tables, request)
        scope = parse_scope(request)
        if scope.kind == "reload" and route is None:
            raise web.HTTPBadRequest(text="since=reload is per route: add route=NAME")
        since = await asyncio.to_thread(scope.since, route or "", self.route_api.rollout.changed_at, time.time())
        trace_id = (request.query.get("trace") or "").strip().lower() or None
        rows = await asyncio.to_thread(self.comparisons.list_samples, route,
                                       request.query.get("verdict") or None, limit, before, since, trace_id)
        return web.json_response(rows)

    async def get_diff(self, request: web.Request) -> web.Response:
        try:
            sample_id = int(request.match_info["id"])
        except ValueError as exc:
            raise web.HTTPBadRequest(text="a comparison id is a whole number") from exc
        if not 0 < sample_id < 2**63:   # ids are positive SQLite integers (64-bit): no other can exist, or be looked up
            raise web.HTTPNotFound(text=f"no comparison #{sample_id}")
        row = await asyncio.to_thread(self.comparisons.get_sample, sample_id)
        if row is None:
            raise web.HTTPNotFound(text=f"no comparison #{sample_id} (samples are kept within the store's bounds)")
        return web.json_response(row)

    async def get_report(self, request: web.Request) -> web.Response:
        only = route_filter(self.tables, request)
        scope = parse_scope(request)
        table = self.tables.current
        now = time.time()
        names = [r.name for r in (*table.routes, table.fallback) if only is None or r.name == only]
        since = await asyncio.to_thread(scope.moments, names, self.route_api.rollout.changed_at, _version(table),
                                        now)
        changed = {n: await asyncio.to_thread(scope.since, n, self.route_api.rollout.changed_at, now)
                   for n in names} if scope.kind != "all" else {}
        stored = await asyncio.to_thread(self.comparisons.report, since)
        out = []
        for route in (*table.routes, table.fallback):
            if route.name not in names:
                continue
            entry = stored.get(route.name, EMPTY_ENTRY)
            if route.is_fallback and not entry["compared"]:
                continue
            moment = changed.get(route.name)
            out.append(report_entry(route, entry, self.stats.route(route.name), scope.label(moment, now), moment))
        return web.json_response({"generated_at": now, "since": request.query.get("since") or None,
                                  "routes": out,
                                  "store": {"dropped": self.comparisons.dropped, "queue": self.shadow.depth}})

    async def post_clear(self, request: web.Request) -> web.Response:
        route = self.route_api.route_or_404(request.match_info["name"])
        cleared = await asyncio.to_thread(self.comparisons.clear, route.name)
        if not cleared:
            raise web.HTTPServiceUnavailable(text="the comparison store is busy; try again")
        return web.json_response({"route": route.name, "cleared": True})

    async def post_replay(self, request: web.Request) -> web.Response:
        route = self.route_api.route_or_404(request.match_info["name"])
        if route.to is None:
            raise web.HTTPConflict(text=f"route {route.name!r} has no extracted backend (`to:`) to replay against")
        limit = int_param(request, "limit", 20, 1, 1000)
        samples = await asyncio.to_thread(self.comparisons.replayable, route.name,
                                          request.query.get("verdict") or None, limit)
        results = []
        for sample in samples:
            rec = await self.shadow.replay(sample, route)
            results.append({"sample": sample["id"], "was": sample["verdict"], "now": rec.verdict,
                            "differences": rec.differences, "reason": rec.reason})
        summary: dict[str, int] = {}
        for r in results:
            summary[r["now"]] = summary.get(r["now"], 0) + 1
        return web.json_response({"route": route.name, "replayed": len(results), "verdicts": summary,
                                  "results": results})


def _lat(summary: Any) -> dict[str, Any]:
    d = summary.as_dict()
    return {"requests": d["requests"], "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"]}


def report_entry(route: Route, entry: dict[str, Any], stats: RouteStats, window: str,
                 since: float | None) -> dict[str, Any]:
    """One route of the report: the stored counts over ``window``, each rate with its denominator, the compare
    rules in force (a field they now cover shows as such) and the live latency over ``REPORT_WINDOW``."""
    rules = _rules(route)
    compared = entry.get("compared") or sum(entry["verdicts"].values())
    verdicts = entry["verdicts"]
    fields = [{**f, "ignored_by_rule": ignored_by(rules, f["field"]),
               "share": round(100.0 * f["count"] / compared, 2) if compared else None} for f in entry["fields"]]
    return {**entry, "fields": fields, "compared": compared,
            "rates": {k: round(100.0 * n / compared, 2) for k, n in verdicts.items()} if compared else {},
            "route": route.name, "stage": route.stage, "window": window, "since": since,
            "match": equal_rate(verdicts.get("match", 0) + verdicts.get("ignored", 0), compared, window),
            "ignore_rules": _ignore_rules(route),
            "latency_window": f"last {REPORT_WINDOW / 60:.0f}m, live",
            "latency": {"legacy": _lat(stats.legacy.summary(REPORT_WINDOW)),
                        "extracted": _lat(stats.extracted.summary(REPORT_WINDOW)),
                        "shadow": _lat(stats.shadow.summary(REPORT_WINDOW))},
            "skipped_live": dict(stats.skipped)}


def _version(table: Any) -> Any:
    def version(name: str) -> str | None:
        route = table.by_name.get(name)
        return route.spec.fingerprint if route is not None and route.spec is not None else None
    return version


def _rules(route: Route) -> Any:
    spec = route.spec
    return spec.shadow.compare.rules if spec is not None and spec.shadow is not None else None


def _ignore_rules(route: Route) -> list[str]:
    """The route's configured ignores as written in routes.yaml (JSON paths and ``header:NAME``)."""
    rules = _rules(route)
    if rules is None:
        return []
    headers = [f"header:{h}" for h in sorted(rules.ignore_headers)]
    headers += [f"header:{p}*" for p in rules.ignore_header_prefixes]
    return [*rules.ignore, *headers]
