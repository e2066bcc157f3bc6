"""Health, readiness, the config being served, reloads and the history of what happened to each route.

    GET  /healthz, /readyz
    GET  /api/config      {generation, path, digest, loaded_at, listen, admin, warnings, last_reload}
    POST /api/reload
    GET  /api/history     ?route=&limit=   each event with ``text``: what happened, in words
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.admin.app import int_param
from gateway.admin.history_text import describe
from gateway.admin.lookup import route_filter
from gateway.errors import problem
from gateway.routing.reload import Reloader
from gateway.routing.table import TableRef
from gateway.stores.api import PinStore


class Lifecycle:
    """Whether the gateway has started serving, and whether it was asked to stop (``/readyz`` answers 503)."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        # Where the listeners are bound ("public", "admin"), filled in when they start.
        self.bound: dict[str, tuple[str, int]] = {}


class StatusAPI:
    def __init__(self, lifecycle: Lifecycle, tables: TableRef, reloader: Reloader, state: PinStore,
                 configured: Mapping[str, tuple[str, int]]) -> None:
        self.lifecycle = lifecycle
        self.tables = tables
        self.reloader = reloader
        self.state = state
        self.configured = configured

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/healthz", self.healthz), web.get("/readyz", self.readyz),
                web.get("/api/config", self.get_config), web.post("/api/reload", self.post_reload),
                web.get("/api/history", self.get_history)]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        life = self.lifecycle
        if not life.ready.is_set() or life.stopping.is_set():
            return problem(503, "Not ready", "the gateway is starting or stopping", "not-ready")
        return web.json_response({"status": "ready", "generation": self.tables.current.generation})

    def config_status(self) -> dict[str, Any]:
        table = self.tables.current
        last = self.reloader.last
        bound = self.lifecycle.bound
        return {
            "generation": table.generation,
            "path": str(table.config.path),
            "digest": table.config.digest,
            "loaded_at": table.loaded_at,
            "listen": list(bound.get("public", self.configured["public"])),
            "admin": list(bound.get("admin", self.configured["admin"])),
            "warnings": list(table.config.warnings),
            "last_reload": last.as_dict() if last else {"ok": True, "at": table.loaded_at, "error": None,
                                                        "generation": table.generation, "changed": True,
                                                        "actor": "start"},
        }

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config_status())

    async def post_reload(self, request: web.Request) -> web.Response:
        status = await self.reloader.reload("admin")
        return web.json_response(status.as_dict(), status=200 if status.ok else 422)

    async def get_history(self, request: web.Request) -> web.Response:
        limit = int_param(request, "limit", 200, 1, 5000)
        rows = await asyncio.to_thread(self.state.history, route_filter(self.tables, request), limit)
        for row in rows:
            row["text"] = describe(row)
        return web.json_response(rows)
