"""The legacy shop: every feature in one aiohttp application over one SQLite database.

Handlers are thin: they parse and validate the request, then hand a plain function ``(conn, ...) -> result``
to ``Database.read`` or ``Database.write``. Writes go through ``_write``, the one place that honours the
shadow marker (``X-Shadow: 1``): the change runs in a transaction that is rolled back, so a shadow copy gets
the same status, shape and a plausible id while nothing is stored.

Errors are RFC 9457 problem details (``application/problem+json``), rendered in one middleware that also sets
``X-Served-By`` on every response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from legacy_app.db import Database, format_timestamp
from legacy_app.writes import entity_id, stamp_write_date, write_options, written_at
from observability.tracing import server_span_middleware

SERVICE_NAME = "legacy"
SERVED_BY_HEADER = "X-Served-By"
PROBLEM_CONTENT_TYPE = "application/problem+json"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_ORDER_LINES = 50
MAX_QUANTITY = 100

DB = web.AppKey("db", Database)
T = TypeVar("T")
log = logging.getLogger(__name__)


# --- errors ---------------------------------------------------------------------------------------------


class Problem(Exception):
    """An error the client should see as a problem document (RFC 9457 section 3)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Invalid(Problem):
    """Bad client input; the detail starts with the offending field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, f"{field}: {message}")


def problem_response(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    # "about:blank" means the title is just the status phrase (RFC 9457 section 4.2.1).
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    response = web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        response.headers[name] = value
    return response


@web.middleware
async def served_by_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json and stamp ``X-Served-By`` on every response."""
    try:
        response = await handler(request)
    except Problem as exc:
        response = problem_response(exc.status, exc.detail)
    except web.HTTPException as exc:
        response = _from_http_exception(request, exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = problem_response(500, "internal error")
    response.headers[SERVED_BY_HEADER] = SERVICE_NAME
    stamp_write_date(request, response)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        return web.Response(status=exc.status, headers=exc.headers)
    # Keep headers such as Allow (405) that the status requires; the body is ours.
    kept = [(k, v) for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")]
    if isinstance(exc, web.HTTPNotFound | web.HTTPMethodNotAllowed):
        detail = f"no route for {request.method} {request.path}"
    else:
        detail = exc.reason
    return problem_response(exc.status, detail, kept)


# --- request parsing ------------------------------------------------------------------------------------


def path_id(request: web.Request, name: str = "id") -> int:
    # The route pattern only admits digits, so this cannot fail on a matched route.
    return int(request.match_info[name])


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(name, f"expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise Invalid(name, f"must be between {low} and {high}")
    return value


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("body", "invalid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("body", "expected a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, low: int, high: int, where: str = "") -> str:
    value = body.get(name)
    field = f"{where}{name}"
    if not isinstance(value, str):
        raise Invalid(field, "required, a string")
    if not low <= len(value) <= high:
        raise Invalid(field, f"must be {low} to {high} characters")
    return value


def int_field(body: dict[str, Any], name: str, low: int, high: int, where: str = "") -> int:
    value = body.get(name)
    field = f"{where}{name}"
    # bool is an int subclass in Python; ``true`` is not a rating.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(field, "required, an integer")
    if not low <= value <= high:
        raise Invalid(field, f"must be between {low} and {high}")
    return value


def now() -> datetime:
    return datetime.now(UTC)


def generated_at() -> str:
    """The time this answer was made, with microseconds: differs on every call."""
    return now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def price(cents: int) -> float:
    return cents / 100


async def _write(request: web.Request, change: Callable[..., T], *args: Any) -> T:
    """Every handler writes through here: a shadow copy runs the change and rolls it back (``write_options``)."""
    return await request.app[DB].write(change, *args, **write_options(request))


# --- queries and changes (run in a worker thread, given the connection) -----------------------------------


def _require_product(conn: sqlite3.Connection, product_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
    if row is None:
        raise Problem(404, f"product {product_id} not found")
    return row


def _record_event(conn: sqlite3.Connection, kind: str, product_id: int | None, actor: str, at: str) -> None:
    conn.execute(
        "INSERT INTO events (kind, product_id, actor, at) VALUES (?, ?, ?, ?)", (kind, product_id, actor, at)
    )


def _list_products(conn: sqlite3.Connection, limit: int, offset: int) -> dict[str, Any]:
    total = conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]
    rows = conn.execute(
        "SELECT id, name, category, price_cents FROM products ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return {"items": [_summary(row) for row in rows], "total": total, "limit": limit, "offset": offset}


def _summary(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "category": row["category"],
        "price": price(row["price_cents"]),
    }


def _product(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    row = _require_product(conn, product_id)
    stock = conn.execute("SELECT stock FROM inventory WHERE product_id = ?", (product_id,)).fetchone()
    return {
        **_summary(row),
        "description": row["description"],
        "currency": "EUR",
        "stock": stock["stock"] if stock else 0,
    }


def _reviews(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    _require_product(conn, product_id)
    rows = conn.execute(
        "SELECT id, author, rating, text, created_at FROM reviews WHERE product_id = ? ORDER BY created_at, id",
        (product_id,),
    ).fetchall()
    # The shop has always shown the average with two decimals, rounded by SQLite (half away from zero).
    average = conn.execute(
        "SELECT ROUND(AVG(rating), 2) FROM reviews WHERE product_id = ?", (product_id,)
    ).fetchone()[0]
    return {
        "product_id": product_id,
        "count": len(rows),
        "average": average,
        "items": [dict(r) for r in rows],
    }


def _add_review(
    conn: sqlite3.Connection, product_id: int, author: str, rating: int, text: str, at: str,
    review_id: int | None = None,
) -> dict[str, Any]:
    _require_product(conn, product_id)
    cursor = conn.execute(
        "INSERT INTO reviews (id, product_id, author, rating, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (review_id, product_id, author, rating, text, at),
    )
    _record_event(conn, "review_posted", product_id, author, at)
    return {
        "id": cursor.lastrowid,
        "product_id": product_id,
        "author": author,
        "rating": rating,
        "text": text,
        "created_at": at,
    }


def _like_count(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    _require_product(conn, product_id)
    count = conn.execute("SELECT COUNT(*) FROM likes WHERE product_id = ?", (product_id,)).fetchone()[0]
    return {"product_id": product_id, "count": count}


def _add_like(conn: sqlite3.Connection, product_id: int, user: str, at: str) -> dict[str, Any]:
    _require_product(conn, product_id)
    # The primary key (product_id, user) makes a second like by the same user a no-op.
    cursor = conn.execute(
        "INSERT OR IGNORE INTO likes (product_id, user, created_at) VALUES (?, ?, ?)", (product_id, user, at)
    )
    if cursor.rowcount:
        _record_event(conn, "product_liked", product_id, user, at)
    return _like_count(conn, product_id)


def _search(conn: sqlite3.Connection, q: str, limit: int, offset: int) -> dict[str, Any]:
    # A full scan: LIKE with a leading wildcard cannot use an index. Matches are ranked by how often the term
    # occurs in name and description. Wildcards typed by the user are escaped so they match literally.
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(
        """
        SELECT id, name, category, price_cents,
               (length(lower(name || ' ' || description))
                - length(replace(lower(name || ' ' || description), lower(:q), ''))) / length(:q) AS hits
        FROM products
        WHERE name LIKE :pattern ESCAPE '\\' OR description LIKE :pattern ESCAPE '\\'
        ORDER BY hits DESC, id
        """,
        {"q": q, "pattern": pattern},
    ).fetchall()
    items = [{**_summary(row), "hits": row["hits"]} for row in rows[offset : offset + limit]]
    return {"q": q, "total": len(rows), "limit": limit, "offset": offset, "items": items}


def _inventory(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    _require_product(conn, product_id)
    row = conn.execute(
        "SELECT product_id, stock, warehouse, updated_at FROM inventory WHERE product_id = ?", (product_id,)
    ).fetchone()
    if row is None:
        return {"product_id": product_id, "stock": 0, "warehouse": None, "updated_at": None}
    return dict(row)


def _events(conn: sqlite3.Connection, limit: int) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT id, kind, product_id, actor, at FROM events ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return {"items": [dict(r) for r in rows], "count": len(rows)}


def _existing_product(conn: sqlite3.Connection, product_id: int, field: str) -> sqlite3.Row:
    # A product named in the body (not the path) is bad input, not a missing resource.
    row = conn.execute("SELECT * FROM products WHERE id = ?", (product_id,)).fetchone()
    if row is None:
        raise Invalid(field, f"unknown product {product_id}")
    return row


def _add_gift(
    conn: sqlite3.Connection, product_id: int, recipient: str, message: str, at: str
) -> dict[str, Any]:
    _existing_product(conn, product_id, "product_id")
    cursor = conn.execute(
        "INSERT INTO gifts (product_id, recipient, message, created_at) VALUES (?, ?, ?, ?)",
        (product_id, recipient, message, at),
    )
    _record_event(conn, "gift_sent", product_id, recipient, at)
    return {
        "id": cursor.lastrowid,
        "product_id": product_id,
        "to": recipient,
        "message": message,
        "created_at": at,
    }


def _place_order(
    conn: sqlite3.Connection, user: str, lines: list[tuple[int, int]], at: str
) -> dict[str, Any]:
    priced = []
    for index, (product_id, quantity) in enumerate(lines):
        product = _existing_product(conn, product_id, f"items[{index}].product_id")
        # The conditional update is the stock check: it cannot oversell even under concurrent orders.
        updated = conn.execute(
            "UPDATE inventory SET stock = stock - :q, updated_at = :at WHERE product_id = :id AND stock >= :q",
            {"q": quantity, "id": product_id, "at": at},
        ).rowcount
        if not updated:
            raise Problem(409, f"product {product_id} is out of stock for quantity {quantity}")
        priced.append((product_id, quantity, product["price_cents"]))
    total_cents = sum(quantity * unit for _, quantity, unit in priced)
    order_id = conn.execute(
        "INSERT INTO orders (user, total_cents, created_at) VALUES (?, ?, ?)", (user, total_cents, at)
    ).lastrowid
    conn.executemany(
        "INSERT INTO order_items (order_id, line, product_id, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?)",
        [(order_id, line, pid, quantity, unit) for line, (pid, quantity, unit) in enumerate(priced)],
    )
    _record_event(conn, "order_placed", None, user, at)
    items = [
        {
            "product_id": pid,
            "quantity": quantity,
            "unit_price": price(unit),
            "line_total": price(quantity * unit),
        }
        for pid, quantity, unit in priced
    ]
    return {"id": order_id, "user": user, "items": items, "total": price(total_cents), "created_at": at}


# --- handlers -------------------------------------------------------------------------------------------


async def list_products(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, 1_000_000)
    return web.json_response(await request.app[DB].read(_list_products, limit, offset))


async def get_product(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DB].read(_product, path_id(request)))


async def get_reviews(request: web.Request) -> web.Response:
    body = await request.app[DB].read(_reviews, path_id(request))
    return web.json_response({**body, "generated_at": generated_at()})


async def post_review(request: web.Request) -> web.Response:
    product_id = path_id(request)
    body = await json_object(request)
    author = text_field(body, "author", 1, 80)
    rating = int_field(body, "rating", 1, 5)
    text = text_field(body, "text", 1, 2000)
    review = await _write(request, _add_review, product_id, author, rating, text, written_at(request),
                          entity_id(request))
    return web.json_response(review, status=201)


async def get_likes(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DB].read(_like_count, path_id(request, "product_id")))


async def post_like(request: web.Request) -> web.Response:
    product_id = path_id(request, "product_id")
    user = text_field(await json_object(request), "user", 1, 80)
    return web.json_response(await _write(request, _add_like, product_id, user, written_at(request)))


async def search(request: web.Request) -> web.Response:
    q = request.query.get("q", "")
    if not 1 <= len(q) <= 100:
        raise Invalid("q", "must be 1 to 100 characters")
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, 1_000_000)
    return web.json_response(await request.app[DB].read(_search, q, limit, offset))


async def get_inventory(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DB].read(_inventory, path_id(request)))


async def list_events(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return web.json_response(await request.app[DB].read(_events, limit))


async def post_gift(request: web.Request) -> web.Response:
    body = await json_object(request)
    product_id = int_field(body, "product_id", 1, 2**63 - 1)
    recipient = text_field(body, "to", 1, 80)
    message = text_field(body, "message", 0, 500)
    gift = await _write(request, _add_gift, product_id, recipient, message, format_timestamp(now()))
    return web.json_response(gift, status=201)


async def post_order(request: web.Request) -> web.Response:
    body = await json_object(request)
    user = text_field(body, "user", 1, 80)
    lines = _order_lines(body.get("items"))
    order = await _write(request, _place_order, user, lines, format_timestamp(now()))
    return web.json_response(order, status=201)


def _order_lines(items: Any) -> list[tuple[int, int]]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ORDER_LINES:
        raise Invalid("items", f"required, a list of 1 to {MAX_ORDER_LINES} lines")
    lines: list[tuple[int, int]] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        where = f"items[{index}]."
        if not isinstance(item, dict):
            raise Invalid(f"items[{index}]", "expected an object")
        product_id = int_field(item, "product_id", 1, 2**63 - 1, where)
        quantity = int_field(item, "quantity", 1, MAX_QUANTITY, where)
        # One line per product keeps the stock check and the order's line totals unambiguous.
        if product_id in seen:
            raise Invalid(f"{where}product_id", f"product {product_id} appears on more than one line")
        seen.add(product_id)
        lines.append((product_id, quantity))
    return lines


async def healthz(request: web.Request) -> web.Response:
    await request.app[DB].read(lambda conn: conn.execute("SELECT 1").fetchone())
    return web.json_response({"status": "ok", "service": SERVICE_NAME})


# --- the application ------------------------------------------------------------------------------------


def create_app(db_path: str, *, middlewares: Iterable[Middleware] = ()) -> web.Application:
    """Build the shop. ``middlewares`` run inside the served-by/problem middleware, in the order given."""
    # The span middleware is outermost so that it sees the final status of every answer, errors included.
    app = web.Application(middlewares=[server_span_middleware(SERVICE_NAME), served_by_middleware, *middlewares])
    app.cleanup_ctx.append(_database_context(db_path))
    app.router.add_routes(
        [
            web.get("/api/products", list_products),
            web.get(r"/api/products/{id:\d+}", get_product),
            web.get(r"/api/products/{id:\d+}/reviews", get_reviews),
            web.post(r"/api/products/{id:\d+}/reviews", post_review),
            web.get(r"/api/likes/{product_id:\d+}", get_likes),
            web.post(r"/api/likes/{product_id:\d+}", post_like),
            web.get("/api/search", search),
            web.get(r"/api/inventory/{id:\d+}", get_inventory),
            web.get("/api/events", list_events),
            web.post("/api/gifts", post_gift),
            web.post("/api/orders", post_order),
            web.get("/healthz", healthz),
        ]
    )
    return app


def _database_context(db_path: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def database(app: web.Application) -> AsyncIterator[None]:
        # Opening may seed a fresh database: keep that off the event loop too.
        app[DB] = await asyncio.to_thread(Database.open, db_path)
        yield
        app[DB].close()

    return database
