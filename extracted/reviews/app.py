"""The reviews service: ``GET/POST /api/products/{id}/reviews`` and ``/healthz``."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from extracted.common import (
    DB,
    create_service_app,
    entity_id,
    generated_at,
    int_field,
    json_object,
    path_id,
    text_field,
    write,
    written_at,
)
from extracted.reviews import store

SERVICE_NAME = "reviews"


async def get_reviews(request: web.Request) -> web.Response:
    body = await request.app[DB].read(store.reviews_of, path_id(request, "id"))
    return web.json_response({**body, "generated_at": generated_at()})


async def post_review(request: web.Request) -> web.Response:
    product_id = path_id(request, "id")
    body = await json_object(request)
    # Same rules, same order and same messages as the monolith, so shadowed errors compare equal.
    author = text_field(body, "author", 1, 80)
    rating = int_field(body, "rating", 1, 5)
    text = text_field(body, "text", 1, 2000)
    # The id comes from the write's Idempotency-Key, so a review mirrored to the monolith keeps it there.
    review = await write(request, store.add_review, product_id, author, rating, text, written_at(request),
                         entity_id(request))
    return web.json_response(review, status=201)


def create_app(db_path: str, *, middlewares: Iterable[Middleware] = ()) -> web.Application:
    """Build the reviews service on ``db_path``. ``middlewares`` run inside the served-by middleware."""
    routes = [
        web.get(r"/api/products/{id:\d+}/reviews", get_reviews),
        web.post(r"/api/products/{id:\d+}/reviews", post_review),
    ]
    return create_service_app(SERVICE_NAME, db_path, store.prepare, routes, middlewares)
