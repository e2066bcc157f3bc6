"""The gateways sharing this store, and the store's health.

    GET /api/fleet   {store: {kind, url, up, since, error, buffered, dropped, outages},
                      instances: [{id, address, admin, version, generation, digest, started, age_s, stale, drift,
                                   self}],
                      drift: bool, stale: int}

``fleet_view`` is the one place that decides which instances are stale (no heartbeat for ``STALE_S``; the store
forgets them after an hour) and which
drift (serve a routes.yaml whose digest differs from the one most live instances serve); the CLI and the console
show its flags. ``StoreGauges`` puts the store's health in ``/metrics``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.stores.api import Membership

STALE_S = 10.0


def gateway_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strangler")
    except PackageNotFoundError:
        return "unknown"


def fleet_view(members: list[dict[str, Any]], status: dict[str, Any], me: str) -> dict[str, Any]:
    instances = [{**m, "stale": m.get("age_s", 0.0) > STALE_S, "self": m.get("id") == me} for m in members]
    live = [m for m in instances if not m["stale"]]
    digests = collections.Counter(m.get("digest") for m in live)
    ranked = digests.most_common(2)
    # The digest most live instances serve is the reference; on a tie there is none, and every one drifts.
    reference = ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    for m in instances:
        m["drift"] = len(digests) > 1 and not m["stale"] and m.get("digest") != reference
    return {"store": status, "instances": instances, "drift": len(digests) > 1,
            "stale": sum(1 for m in instances if m["stale"]), "reference_digest": reference}


class FleetAPI:
    def __init__(self, members: Membership | None, instance: str) -> None:
        self.members = members
        self.instance = instance

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/fleet", self.get_fleet)]

    def view(self) -> dict[str, Any]:
        if self.members is None:
            return fleet_view([], {"kind": "none", "up": True}, self.instance)
        return fleet_view(self.members.members(), self.members.status(), self.instance)

    async def get_fleet(self, request: web.Request) -> web.Response:
        return web.json_response(self.view())


class StoreGauges:
    """``strangler_store_up``, ``strangler_store_buffered`` and ``strangler_store_dropped_total``."""

    def __init__(self, members: Membership | None) -> None:
        self.members = members

    def __call__(self) -> Iterator[Metric]:
        if self.members is None:
            return
        status = self.members.status()
        yield GaugeMetricFamily("strangler_store_up", "1 while the shared store is reachable (0: an outage; the "
                                "gateway serves on its last known state and buffers writes)",
                                value=1 if status.get("up") else 0)
        yield GaugeMetricFamily("strangler_store_buffered", "Writes waiting for the store",
                                value=status.get("buffered", 0))
        yield CounterMetricFamily("strangler_store_dropped", "Writes dropped because the store's buffer was full",
                                  value=status.get("dropped", 0))
        yield CounterMetricFamily("strangler_store_outages", "Times the store became unreachable",
                                  value=status.get("outages", 0))
