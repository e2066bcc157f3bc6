"""Mirrored writes (``sync:``): per route, pending, delivered, dead letters, lag, read-after-write verdicts.

    GET  /api/sync?route=&state=&limit=   {routes: [{route, stage, effective_stage, sync, pending, delivered,
                                           dead, oldest_pending_age_s, head, verified, drift}], lag, entries}
    POST /api/sync/{name}/retry           {route, retried}: the route's dead letters become pending again

The figures come from the journal (every process's writes) and the deliverer of this process (lag).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily

from gateway.admin.app import int_param
from gateway.errors import problem
from gateway.rollout.controller import Rollout
from gateway.routing.table import TableRef
from gateway.stores.api import ComparisonStore, SyncJournal
from gateway.sync.deliver import Deliverer
from gateway.sync.drift import classify
from gateway.telemetry.metrics import gauge_family

STATES = ("pending", "delivered", "dead")
DRIFT_SAMPLES = 200       # recent mismatch samples judged for drift
DRIFT_WINDOW = 3600.0     # seconds before the oldest of them in which a write may still have been on its way


class SyncAPI:
    def __init__(self, tables: TableRef, rollout: Rollout, journal: SyncJournal, deliverer: Deliverer,
                 comparisons: ComparisonStore | None = None) -> None:
        self.tables = tables
        self.rollout = rollout
        self.journal = journal
        self.deliverer = deliverer
        self.comparisons = comparisons   # the shadow's mismatch samples, to tell drift from real differences

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/sync", self.get_sync),
                web.post("/api/sync/{name}/retry", self.post_retry)]

    def _known(self, name: str, summary: dict[str, Any]) -> None:
        if name not in self.tables.current.by_name and name not in summary:
            raise web.HTTPNotFound(text=f"no route named {name!r}; routes: "
                                        f"{', '.join(self.tables.current.by_name) or 'none'}")

    async def get_sync(self, request: web.Request) -> web.Response:
        try:
            return await self._get_sync(request)
        except ConnectionError as exc:   # a shared journal whose store is away: say so, not a 500
            return problem(503, "Store unreachable", f"the sync journal cannot be read: {exc}", "store-unreachable")

    async def _get_sync(self, request: web.Request) -> web.Response:
        summary = await asyncio.to_thread(self.journal.summary)
        name = request.query.get("route") or None
        state = request.query.get("state") or None
        if state is not None and state not in STATES:
            raise web.HTTPBadRequest(text=f"state must be one of {', '.join(STATES)}")
        if name is not None:
            self._known(name, summary)
        now = time.time()
        rows = []
        table = self.tables.current
        names = [r.name for r in table.routes if r.spec is not None and r.spec.sync is not None]
        names += sorted(n for n in summary if n not in names)
        for n in names:
            if name is not None and n != name:
                continue
            route = table.by_name.get(n)
            s = summary.get(n) or {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending_at": None,
                                   "head": None, "verified": {}}
            view = self.rollout.view(route) if route is not None else None
            oldest = s["oldest_pending_at"]
            rows.append({"route": n, "sync": bool(route and route.spec and route.spec.sync),
                         "stage": view["stage"] if view else None,
                         "effective_stage": view["effective_stage"] if view else None,
                         "pending": s["pending"], "delivered": s["delivered"], "dead": s["dead"],
                         "oldest_pending_age_s": round(now - oldest, 3) if oldest else None,
                         "head": s["head"], "verified": s["verified"],
                         "drift": await self._drift(n) if route is not None and route.spec is not None
                         and route.spec.sync is not None else None})
        out: dict[str, Any] = {"routes": rows, "lag": self.deliverer.lag()}
        if name is not None or state is not None:
            limit = int_param(request, "limit", 50, 1, 1000)
            out["entries"] = await asyncio.to_thread(self.journal.entries, name, state, limit)
        return web.json_response(out)

    async def _drift(self, route: str) -> dict[str, Any] | None:
        """Of the route's recorded shadow mismatches, how many a mirrored write on its way explains."""
        if self.comparisons is None:
            return None
        samples = await asyncio.to_thread(self.comparisons.list_samples, route, "mismatch", DRIFT_SAMPLES)
        if not samples:
            return {"mismatches": 0, "drift": 0, "real": 0, "drift_samples": []}
        ats = [float(sample["at"]) for sample in samples]
        writes = await asyncio.to_thread(self.journal.writes_between, route, min(ats) - DRIFT_WINDOW, max(ats))
        return classify(samples, writes)

    async def post_retry(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            summary = await asyncio.to_thread(self.journal.summary)
            self._known(name, summary)
            retried = await asyncio.to_thread(self.journal.retry_dead, name)
        except ConnectionError as exc:
            return problem(503, "Store unreachable", f"the dead letters cannot be retried now: {exc}",
                           "store-unreachable")
        self.deliverer.wake()
        return web.json_response({"route": name, "retried": retried})


class SyncGauges:
    """The sync families of ``/metrics``, read from the deliverer's last look at the journal (refreshed every
    ``deliver.POLL``) so a scrape never waits on the disk:

        strangler_sync_pending{route}                    gauge
        strangler_sync_oldest_pending_age_seconds{route} gauge, 0 when nothing is pending
        strangler_sync_delivered{route}                  gauge, delivered entries the journal still holds
        strangler_sync_dead{route}                       gauge, dead letters
        strangler_sync_delivered_total, strangler_sync_dead_total, strangler_sync_retries_total
                                                         counters of this process's deliverer
    """

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    def __call__(self) -> Any:
        summary = self.deliverer.summary
        now = time.time()
        routes = sorted(summary)
        yield gauge_family("strangler_sync_pending", "Mirrored writes waiting for the other side", ("route",),
                           ((r, summary[r]["pending"]) for r in routes))
        yield gauge_family("strangler_sync_oldest_pending_age_seconds", "Age of the oldest pending mirrored write",
                           ("route",), ((r, round(now - summary[r]["oldest_pending_at"], 3)
                                         if summary[r]["oldest_pending_at"] else 0.0) for r in routes))
        yield gauge_family("strangler_sync_delivered", "Mirrored writes delivered (kept in the journal)",
                           ("route",), ((r, summary[r]["delivered"]) for r in routes))
        yield gauge_family("strangler_sync_dead", "Mirrored writes the other side refused (dead letters)",
                           ("route",), ((r, summary[r]["dead"]) for r in routes))
        for name, value, text in (("strangler_sync_delivered", self.deliverer.delivered, "delivered"),
                                  ("strangler_sync_dead", self.deliverer.dead, "turned into dead letters"),
                                  ("strangler_sync_retries", self.deliverer.retries, "attempts retried")):
            yield CounterMetricFamily(name + "_events", f"Mirrored writes {text} by this process", value=value)
