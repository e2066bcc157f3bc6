"""The admin listener's application: its middlewares, and the APIs the composition root hands it.

Reads are open to whoever can reach the listener (loopback by default); every mutation (POST) needs
``Authorization: Bearer <token>``. Nothing mutates on GET. Each API is a small class that receives, through its
constructor, the collaborators it reads, and lists its routes in ``routes()``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from gateway.admin import console
from gateway.admin.traces import OTLP_PATH
from gateway.errors import problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
TOKEN: web.AppKey[str] = web.AppKey("admin_token", str)


class API(Protocol):
    def routes(self) -> list[web.RouteDef]: ...


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The OTLP receiver is open: exporters know an endpoint, not a token, and it only feeds a bounded store.
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path == OTLP_PATH:
        return await handler(request)
    expected = request.app[TOKEN]
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


def create_admin_app(token: str, apis: Iterable[API], access: Middleware | None = None) -> web.Application:
    """``access`` runs first (``gateway.admin.hosts.admin_access``: which Host values and readers are answered)."""
    app = web.Application(middlewares=[*([access] if access is not None else []), problems, require_token])
    app[TOKEN] = token
    for api in apis:
        app.router.add_routes(api.routes())
    app.router.add_get("/", console.index)
    app.router.add_get("/console/{path}", console.asset)
    return app


async def json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be a whole number") from exc
    return max(low, min(high, value))
