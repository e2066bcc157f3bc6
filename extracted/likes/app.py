"""The likes service: ``GET/POST /api/likes/{product_id}`` and ``/healthz``. Answers exactly as the monolith."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from extracted.common import DB, create_service_app, json_object, path_id, text_field, write, written_at
from extracted.likes import store

SERVICE_NAME = "likes"


async def get_likes(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DB].read(store.like_count, path_id(request, "product_id")))


async def post_like(request: web.Request) -> web.Response:
    product_id = path_id(request, "product_id")
    user = text_field(await json_object(request), "user", 1, 80)
    return web.json_response(await write(request, store.add_like, product_id, user, written_at(request)))


def create_app(db_path: str, *, middlewares: Iterable[Middleware] = ()) -> web.Application:
    """Build the likes service on ``db_path``. ``middlewares`` run inside the served-by middleware."""
    routes = [
        web.get(r"/api/likes/{product_id:\d+}", get_likes),
        web.post(r"/api/likes/{product_id:\d+}", post_like),
    ]
    return create_service_app(SERVICE_NAME, db_path, store.prepare, routes, middlewares)
