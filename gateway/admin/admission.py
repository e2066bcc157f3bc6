"""The waiting rooms on the admin listener.

    GET  /api/admission              [{route, rate, paused, waiting, admitted_per_s, wait_p50_s, wait_p99_s, ...}]
    POST /api/admission/rotate-key   a new key signs tickets from now on; the old one still verifies for a while

and their Prometheus families (read at scrape time from ``Rooms``):

    strangler_admission_waiting{route}                   gauge   visitors in line
    strangler_admission_admitted_total{route,how}        counter let in directly or from the line
    strangler_admission_full_total{route}                counter turned away: the line was full
    strangler_admission_lost_total{route}                counter lost their place (stopped polling)
    strangler_admission_wait_seconds{route,quantile}     gauge   wait of queued visitors, last minute (0.5, 0.99)
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.admission.room import Rooms
from gateway.routing.table import TableRef


class AdmissionAPI:
    def __init__(self, tables: TableRef, rooms: Rooms) -> None:
        self.tables = tables
        self.rooms = rooms

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/admission", self.get_rooms),
                web.post("/api/admission/rotate-key", self.post_rotate)]

    async def get_rooms(self, request: web.Request) -> web.Response:
        rows = []
        for route in self.tables.current.routes:
            view = self.rooms.view(route.name)
            if view is not None:
                rows.append({"route": route.name, **view})
        return web.json_response(rows)

    async def post_rotate(self, request: web.Request) -> web.Response:
        key = self.rooms.queue.rotate_key()
        self.rooms.record("admission_key_rotated", None, "admin", f"ticket key {key.kid} signs from now on",
                          {"kid": key.kid})
        return web.json_response({"kid": key.kid, "created": key.created,
                                  "accepted": [k.kid for k in self.rooms.queue.keys()]})


class AdmissionGauges:
    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms

    def __call__(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("strangler_admission_waiting", "Visitors waiting in line", labels=["route"])
        admitted = CounterMetricFamily("strangler_admission_admitted", "Visitors let in, directly or from the "
                                       "line", labels=["route", "how"])
        full = CounterMetricFamily("strangler_admission_full", "Visitors turned away: the line was full",
                                   labels=["route"])
        lost = CounterMetricFamily("strangler_admission_lost", "Visitors who lost their place (stopped polling)",
                                   labels=["route"])
        wait = GaugeMetricFamily("strangler_admission_wait_seconds", "Wait of visitors let in from the line, "
                                 "last minute", labels=["route", "quantile"])
        for route in sorted(self.rooms.specs):
            view = self.rooms.view(route)
            if view is None:
                continue
            waiting.add_metric([route], view["waiting"])
            admitted.add_metric([route, "direct"], view["admitted_direct"])
            admitted.add_metric([route, "queued"], view["admitted_from_queue"])
            full.add_metric([route], view["turned_away_full"])
            lost.add_metric([route], view["lost"])
            for q, key in (("0.5", "wait_p50_s"), ("0.99", "wait_p99_s")):
                if view[key] is not None:
                    wait.add_metric([route, q], view[key])
        yield from (waiting, admitted, full, lost, wait)
