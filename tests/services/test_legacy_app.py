"""The legacy monolith, served for real on loopback (pytest-aiohttp) and once as a ``python -m`` process."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from legacy_app.app import create_app
from legacy_app.db import PRODUCT_COUNT, ensure_database

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
GENERATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
PROBLEM_KEYS = {"type", "title", "status", "detail"}



@pytest.fixture
async def client(aiohttp_client: Any, legacy_db: Path) -> TestClient:
    return await aiohttp_client(create_app(str(legacy_db)))


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


async def assert_problem(response: aiohttp.ClientResponse, status: int, field: str | None = None) -> dict:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    assert response.headers["X-Served-By"] == "legacy"
    body = await response.json()
    assert set(body) == PROBLEM_KEYS
    assert body["status"] == status and body["type"] == "about:blank"
    if field is not None:
        assert body["detail"].startswith(f"{field}: "), body
    return body


def dump(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        tables = ["products", "inventory", "reviews", "likes", "events"]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        conn.close()


async def find_products(
    client: TestClient, count: int, min_stock: int = 1, max_stock: int = 10**9
) -> list[dict]:
    found = []
    for product_id in range(1, PRODUCT_COUNT + 1):
        product = await get_json(client, f"/api/products/{product_id}")
        if min_stock <= product["stock"] <= max_stock:
            found.append(product)
            if len(found) == count:
                return found
    raise AssertionError("the seed has no such products")


async def find_product(client: TestClient, min_stock: int = 1, max_stock: int = 10**9) -> dict:
    return (await find_products(client, 1, min_stock, max_stock))[0]


# --- seed -----------------------------------------------------------------------------------------------


def test_seed_is_deterministic(tmp_path: Path) -> None:
    ensure_database(tmp_path / "a.db")
    ensure_database(tmp_path / "b.db")
    first, second = dump(tmp_path / "a.db"), dump(tmp_path / "b.db")
    assert first == second
    assert len(first["products"]) == PRODUCT_COUNT >= 60
    assert len({row[2] for row in first["products"]}) >= 5  # categories


def test_seed_shape(seeded_db: Path) -> None:
    conn = sqlite3.connect(seeded_db)
    per_product = conn.execute("SELECT COUNT(*) FROM reviews GROUP BY product_id").fetchall()
    assert len(per_product) == PRODUCT_COUNT
    assert all(3 <= n <= 8 for (n,) in per_product)
    assert all(TIMESTAMP.match(at) for (at,) in conn.execute("SELECT created_at FROM reviews"))
    assert conn.execute("SELECT COUNT(*) FROM likes").fetchone()[0] > 0
    assert conn.execute("SELECT COUNT(*) FROM inventory WHERE stock = 0").fetchone()[0] > 0
    conn.close()


def test_second_start_does_not_reseed(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    ensure_database(path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM reviews WHERE product_id = 1")
    conn.commit()
    ensure_database(path)
    # A non-empty catalogue is never seeded again, so the deleted reviews stay deleted.
    assert conn.execute("SELECT COUNT(*) FROM reviews WHERE product_id = 1").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM products").fetchone()[0] == PRODUCT_COUNT
    conn.close()


# --- products, search, inventory, events ----------------------------------------------------------------


async def test_list_products_defaults_and_pages(client: TestClient) -> None:
    first = await get_json(client, "/api/products")
    assert [p["id"] for p in first["items"]] == list(range(1, 21))
    assert first["total"] == PRODUCT_COUNT and first["limit"] == 20 and first["offset"] == 0
    page = await get_json(client, "/api/products?limit=5&offset=10")
    assert [p["id"] for p in page["items"]] == [11, 12, 13, 14, 15]
    assert set(page["items"][0]) == {"id", "name", "category", "price"}


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=101", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset")],
)
async def test_list_products_rejects_bad_paging(client: TestClient, query: str, field: str) -> None:
    await assert_problem(await client.get(f"/api/products?{query}"), 400, field)


async def test_product_has_price_and_stock(client: TestClient) -> None:
    product = await get_json(client, "/api/products/7")
    assert product["id"] == 7 and product["currency"] == "EUR"
    assert isinstance(product["price"], float) and product["price"] > 0
    inventory = await get_json(client, "/api/inventory/7")
    assert product["stock"] == inventory["stock"]
    assert TIMESTAMP.match(inventory["updated_at"])


@pytest.mark.parametrize("path", ["/api/products/9999", "/api/inventory/9999", "/api/products/9999/reviews"])
async def test_unknown_product_is_a_404_problem(client: TestClient, path: str) -> None:
    body = await assert_problem(await client.get(path), 404)
    assert body["detail"] == "product 9999 not found"


async def test_unknown_path_and_method_are_problems_served_by_legacy(client: TestClient) -> None:
    body = await assert_problem(await client.get("/no/such/path"), 404)
    assert body["detail"] == "no route for GET /no/such/path"
    response = await client.delete("/api/products/1")
    await assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]


async def test_search_scans_name_and_description(client: TestClient, legacy_db: Path) -> None:
    result = await get_json(client, "/api/search?q=Kettle&limit=100")
    conn = sqlite3.connect(legacy_db)
    expected = {
        pid
        for pid, text in conn.execute("SELECT id, name || ' ' || description FROM products")
        if "kettle" in text.lower()
    }
    conn.close()
    assert expected and result["total"] == len(expected)
    assert {item["id"] for item in result["items"]} == expected
    assert [i["hits"] for i in result["items"]] == sorted((i["hits"] for i in result["items"]), reverse=True)


async def test_search_treats_wildcards_literally(client: TestClient) -> None:
    assert (await get_json(client, "/api/search?q=%25"))["total"] == 0
    assert (await get_json(client, "/api/search?q=_"))["total"] == 0


@pytest.mark.parametrize("query", ["", "?q=", "?q=" + "x" * 101])
async def test_search_needs_a_query(client: TestClient, query: str) -> None:
    await assert_problem(await client.get(f"/api/search{query}"), 400, "q")


async def test_events_are_newest_first(client: TestClient) -> None:
    events = await get_json(client, "/api/events?limit=5")
    ids = [e["id"] for e in events["items"]]
    assert len(ids) == events["count"] == 5 and ids == sorted(ids, reverse=True)
    await assert_problem(await client.get("/api/events?limit=500"), 400, "limit")


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200 and response.headers["X-Served-By"] == "legacy"
    assert await response.json() == {"status": "ok", "service": "legacy"}


# --- reviews --------------------------------------------------------------------------------------------


async def test_reviews_shape_and_two_decimal_average(client: TestClient) -> None:
    response = await client.get("/api/products/1/reviews")
    assert response.headers["X-Served-By"] == "legacy"
    body = await response.json()
    assert set(body) == {"product_id", "count", "average", "items", "generated_at"}
    assert body["product_id"] == 1 and body["count"] == len(body["items"])
    ids = [item["id"] for item in body["items"]]
    assert ids == sorted(ids)
    for item in body["items"]:
        assert set(item) == {"id", "author", "rating", "text", "created_at"}
        assert TIMESTAMP.match(item["created_at"])
    ratings = [item["rating"] for item in body["items"]]
    mean = Decimal(sum(ratings)) / len(ratings)
    assert body["average"] == float(mean.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    assert GENERATED_AT.match(body["generated_at"])


async def test_generated_at_differs_between_calls(client: TestClient) -> None:
    first = await get_json(client, "/api/products/2/reviews")
    second = await get_json(client, "/api/products/2/reviews")
    assert first["generated_at"] != second["generated_at"]
    assert {**first, "generated_at": None} == {**second, "generated_at": None}


async def test_post_review_is_stored(client: TestClient) -> None:
    before = await get_json(client, "/api/products/4/reviews")
    response = await client.post(
        "/api/products/4/reviews", json={"author": "Sam", "rating": 5, "text": "Great"}
    )
    assert response.status == 201 and response.headers["X-Served-By"] == "legacy"
    review = await response.json()
    assert review["id"] > max(item["id"] for item in before["items"])
    assert TIMESTAMP.match(review["created_at"])
    after = await get_json(client, "/api/products/4/reviews")
    assert after["count"] == before["count"] + 1
    assert after["items"][-1] == {k: review[k] for k in ("id", "author", "rating", "text", "created_at")}
    events = await get_json(client, "/api/events?limit=1")
    assert events["items"][0]["kind"] == "review_posted"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rating": 4, "text": "ok"}, "author"),
        ({"author": "", "rating": 4, "text": "ok"}, "author"),
        ({"author": "a" * 81, "rating": 4, "text": "ok"}, "author"),
        ({"author": "Sam", "rating": 0, "text": "ok"}, "rating"),
        ({"author": "Sam", "rating": 6, "text": "ok"}, "rating"),
        ({"author": "Sam", "rating": "5", "text": "ok"}, "rating"),
        ({"author": "Sam", "rating": True, "text": "ok"}, "rating"),
        ({"author": "Sam", "rating": 4.5, "text": "ok"}, "rating"),
        ({"author": "Sam", "rating": 4, "text": ""}, "text"),
        ({"author": "Sam", "rating": 4, "text": "t" * 2001}, "text"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_post_review_rejects_bad_input(client: TestClient, body: Any, field: str) -> None:
    await assert_problem(await client.post("/api/products/4/reviews", json=body), 400, field)


async def test_bad_review_input_writes_nothing(client: TestClient) -> None:
    before = await get_json(client, "/api/products/4/reviews")
    await client.post("/api/products/4/reviews", json={"author": "Sam", "rating": 9, "text": "x"})
    await client.post(
        "/api/products/4/reviews", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (await get_json(client, "/api/products/4/reviews"))["count"] == before["count"]


async def test_post_review_invalid_json_is_a_problem(client: TestClient) -> None:
    response = await client.post(
        "/api/products/4/reviews", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    await assert_problem(response, 400, "body")


async def test_post_review_unknown_product(client: TestClient) -> None:
    response = await client.post(
        "/api/products/9999/reviews", json={"author": "Sam", "rating": 4, "text": "x"}
    )
    await assert_problem(response, 404)


# --- likes, gifts, orders -------------------------------------------------------------------------------


async def test_likes_count_each_user_once(client: TestClient) -> None:
    before = await get_json(client, "/api/likes/5")
    assert set(before) == {"product_id", "count"} and before["product_id"] == 5
    for _ in range(2):
        response = await client.post("/api/likes/5", json={"user": "new-fan"})
        assert response.status == 200
        assert await response.json() == {"product_id": 5, "count": before["count"] + 1}
    assert await get_json(client, "/api/likes/5") == {"product_id": 5, "count": before["count"] + 1}


async def test_likes_errors(client: TestClient) -> None:
    await assert_problem(await client.get("/api/likes/9999"), 404)
    await assert_problem(await client.post("/api/likes/9999", json={"user": "u"}), 404)
    await assert_problem(await client.post("/api/likes/5", json={"user": ""}), 400, "user")
    await assert_problem(await client.post("/api/likes/5", json={}), 400, "user")


async def test_gift_is_created_and_recorded(client: TestClient) -> None:
    gift = {"product_id": 3, "to": "Robin", "message": "Happy birthday"}
    response = await client.post("/api/gifts", json=gift)
    assert response.status == 201
    body = await response.json()
    assert {k: body[k] for k in gift} == gift and isinstance(body["id"], int)
    latest = (await get_json(client, "/api/events?limit=1"))["items"][0]
    assert (latest["kind"], latest["product_id"], latest["actor"]) == ("gift_sent", 3, "Robin")


@pytest.mark.parametrize(
    ("gift", "field"),
    [
        ({"to": "Robin", "message": ""}, "product_id"),
        ({"product_id": 9999, "to": "Robin", "message": ""}, "product_id"),
        ({"product_id": 3, "message": "hi"}, "to"),
        ({"product_id": 3, "to": "Robin", "message": "m" * 501}, "message"),
    ],
)
async def test_gift_rejects_bad_input(client: TestClient, gift: dict, field: str) -> None:
    await assert_problem(await client.post("/api/gifts", json=gift), 400, field)


async def test_order_totals_and_decrements_stock(client: TestClient) -> None:
    first, second = await find_products(client, 2, min_stock=2)
    lines = [{"product_id": first["id"], "quantity": 2}, {"product_id": second["id"], "quantity": 1}]
    order = {"user": "sam", "items": lines}
    response = await client.post("/api/orders", json=order)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert isinstance(body["id"], int) and body["user"] == "sam"
    assert body["total"] == pytest.approx(2 * first["price"] + second["price"])
    assert [line["line_total"] for line in body["items"]] == pytest.approx(
        [2 * first["price"], second["price"]]
    )
    assert (await get_json(client, f"/api/inventory/{first['id']}"))["stock"] == first["stock"] - 2
    assert (await get_json(client, f"/api/inventory/{second['id']}"))["stock"] == second["stock"] - 1


async def test_order_out_of_stock_is_409_and_changes_nothing(client: TestClient) -> None:
    available = await find_product(client, min_stock=1)
    sold_out = await find_product(client, min_stock=0, max_stock=0)
    order = {
        "user": "sam",
        "items": [
            {"product_id": available["id"], "quantity": 1},
            {"product_id": sold_out["id"], "quantity": 1},
        ],
    }
    body = await assert_problem(await client.post("/api/orders", json=order), 409)
    assert str(sold_out["id"]) in body["detail"]
    # The first line was already taken off stock inside the transaction; the 409 rolled it back.
    assert (await get_json(client, f"/api/inventory/{available['id']}"))["stock"] == available["stock"]


@pytest.mark.parametrize(
    ("order", "field"),
    [
        ({"items": [{"product_id": 1, "quantity": 1}]}, "user"),
        ({"user": "sam", "items": []}, "items"),
        ({"user": "sam", "items": [{"product_id": 1, "quantity": 0}]}, "items[0].quantity"),
        ({"user": "sam", "items": [{"product_id": 9999, "quantity": 1}]}, "items[0].product_id"),
        (
            {"user": "sam", "items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 1}]},
            "items[1].product_id",
        ),
        ({"user": "sam", "items": ["x"]}, "items[0]"),
    ],
)
async def test_order_rejects_bad_input(client: TestClient, order: dict, field: str) -> None:
    await assert_problem(await client.post("/api/orders", json=order), 400, field)


# --- shadow marker: a dry run that answers as if it had written ---------------------------------------------

SHADOW = {"X-Shadow": "1"}


def without_noise(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "generated_at"}


@pytest.mark.parametrize(
    ("path", "body", "status", "probe"),
    [
        (
            "/api/products/3/reviews",
            {"author": "Sam", "rating": 1, "text": "meh"},
            201,
            "/api/products/3/reviews",
        ),
        ("/api/likes/3", {"user": "shadow-fan"}, 200, "/api/likes/3"),
        ("/api/gifts", {"product_id": 3, "to": "Robin", "message": ""}, 201, "/api/events"),
        (
            "/api/orders",
            {"user": "sam", "items": [{"product_id": 3, "quantity": 1}]},
            201,
            "/api/inventory/3",
        ),
    ],
)
async def test_shadow_request_answers_but_writes_nothing(
    client: TestClient, path: str, body: dict, status: int, probe: str
) -> None:
    if path == "/api/orders":
        assert (await get_json(client, probe))["stock"] > 0, "product 3 must be in stock for this test"
    before = without_noise(await get_json(client, probe))
    events_before = await get_json(client, "/api/events")

    shadow = await client.post(path, json=body, headers=SHADOW)
    assert shadow.status == status and shadow.headers["X-Served-By"] == "legacy"
    shadow_body = await shadow.json()
    assert without_noise(await get_json(client, probe)) == before
    assert await get_json(client, "/api/events") == events_before

    # The real write answers the same way (same id), and the probe does see it, so the check above means something.
    real = await client.post(path, json=body)
    assert real.status == status
    real_body = await real.json()
    assert {k: v for k, v in real_body.items() if k != "created_at"} == {
        k: v for k, v in shadow_body.items() if k != "created_at"
    }
    assert without_noise(await get_json(client, probe)) != before


async def test_shadow_request_still_validates(client: TestClient) -> None:
    response = await client.post(
        "/api/products/3/reviews", json={"author": "Sam", "rating": 7}, headers=SHADOW
    )
    await assert_problem(response, 400, "rating")
    sold_out = await find_product(client, min_stock=0, max_stock=0)
    order = {"user": "sam", "items": [{"product_id": sold_out["id"], "quantity": 1}]}
    await assert_problem(await client.post("/api/orders", json=order, headers=SHADOW), 409)


async def test_shadow_header_must_be_exactly_one(client: TestClient) -> None:
    before = await get_json(client, "/api/likes/6")
    await client.post("/api/likes/6", json={"user": "not-a-shadow"}, headers={"X-Shadow": "0"})
    assert (await get_json(client, "/api/likes/6"))["count"] == before["count"] + 1


# --- as a real process ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "legacy.log").open("wb")
    command = [sys.executable, "-m", "legacy_app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--db", str(tmp_path / "fresh.db")], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, process)
            async with session.get(f"{base}/api/products/1/reviews") as response:
                assert response.status == 200
                assert response.headers["X-Served-By"] == "legacy"
                assert (await response.json())["product_id"] == 1
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
    assert process.returncode == 0, (tmp_path / "legacy.log").read_text()
    assert (tmp_path / "fresh.db").exists()


async def wait_healthy(session: aiohttp.ClientSession, base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited before it became healthy"
        try:
            async with session.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base} did not become healthy in time")
