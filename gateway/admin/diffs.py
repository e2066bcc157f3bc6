"""Shadow comparisons: recent samples, one sample whole, the per-route report, and replays.

    GET  /api/diffs?route=&verdict=&limit=&before=
    GET  /api/diffs/{id}
    GET  /api/report
    POST /api/routes/{name}/replay?limit=&verdict=

Store reads run in a worker thread, so a slow query never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.admin.app import int_param
from gateway.admin.routes import RoutesAPI
from gateway.routing.table import TableRef
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.stores.api import ComparisonStore
from gateway.telemetry.stats import StatsRegistry

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
                web.post("/api/routes/{name}/replay", self.post_replay)]

    async def get_diffs(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 50, 1, 1000)
        before = int_param(request, "before", 0, 0, 2**62) or None
        rows = await asyncio.to_thread(self.comparisons.list_samples, request.query.get("route") or None,
                                       request.query.get("verdict") or None, limit, before)
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
        stored = await asyncio.to_thread(self.comparisons.report)
        table = self.tables.current
        out = []
        for route in (*table.routes, table.fallback):
            entry = stored.get(route.name, EMPTY_ENTRY)
            if route.is_fallback and not entry["compared"]:
                continue
            stats = self.stats.route(route.name)
            out.append({**entry, "route": route.name, "stage": route.stage,
                        "latency": {"legacy": _lat(stats.legacy.summary(REPORT_WINDOW)),
                                    "extracted": _lat(stats.extracted.summary(REPORT_WINDOW)),
                                    "shadow": _lat(stats.shadow.summary(REPORT_WINDOW))},
                        "skipped_live": dict(stats.skipped)})
        return web.json_response({"generated_at": time.time(), "routes": out,
                                  "store": {"dropped": self.comparisons.dropped, "queue": self.shadow.depth}})

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
