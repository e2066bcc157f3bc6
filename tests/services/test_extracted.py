"""The extracted reviews and likes services: migration from the monolith, their answers next to the monolith's
(the differences shadow comparison must catch, and nothing else), and the shadow marker."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

import extracted.common
import extracted.likes
import extracted.reviews
from extracted.common import to_iso
from legacy_app.app import create_app as create_legacy_app
from legacy_app.db import PRODUCT_COUNT

REPO_ROOT = Path(__file__).resolve().parents[2]
SHADOW = {"X-Shadow": "1"}
NOISE = ("average", "generated_at")



@pytest.fixture
async def legacy(aiohttp_client: Any, legacy_db: Path) -> TestClient:
    return await aiohttp_client(create_legacy_app(str(legacy_db)))


@pytest.fixture
async def reviews(aiohttp_client: Any, legacy_db: Path, tmp_path: Path) -> TestClient:
    db = tmp_path / "reviews.db"
    extracted.reviews.migrate(legacy_db, db)
    return await aiohttp_client(extracted.reviews.create_app(str(db)))


@pytest.fixture
async def likes(aiohttp_client: Any, legacy_db: Path, tmp_path: Path) -> TestClient:
    db = tmp_path / "likes.db"
    extracted.likes.migrate(legacy_db, db)
    return await aiohttp_client(extracted.likes.create_app(str(db)))


async def call(client: TestClient, method: str, path: str, **kwargs: Any) -> tuple[int, str, Any]:
    async with client.request(method, path, **kwargs) as response:
        return response.status, response.content_type, await response.json()


def rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- migration ------------------------------------------------------------------------------------------


def test_reviews_migration_keeps_ids_and_is_idempotent(legacy_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "reviews.db"
    legacy_reviews = rows(legacy_db, "SELECT id, product_id, author, rating, text, created_at FROM reviews")
    assert extracted.reviews.migrate(legacy_db, db) == {
        "products": PRODUCT_COUNT,
        "reviews": len(legacy_reviews),
    }
    copied = rows(db, "SELECT review_id, product_id, author, rating, body, created_at FROM reviews")
    assert sorted(r[:5] + (to_iso(r[5]),) for r in copied) == sorted(legacy_reviews)

    assert extracted.reviews.migrate(legacy_db, db) == {"products": 0, "reviews": 0}
    assert rows(db, "SELECT COUNT(*) FROM reviews") == [(len(legacy_reviews),)]


def test_likes_migration_keeps_likes_and_is_idempotent(legacy_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "likes.db"
    legacy_likes = rows(legacy_db, "SELECT product_id, user FROM likes")
    assert extracted.likes.migrate(legacy_db, db) == {"products": PRODUCT_COUNT, "likes": len(legacy_likes)}
    assert sorted(rows(db, "SELECT product_id, user_id FROM likes")) == sorted(legacy_likes)
    assert extracted.likes.migrate(legacy_db, db) == {"products": 0, "likes": 0}
    assert rows(db, "SELECT COUNT(*) FROM likes") == [(len(legacy_likes),)]


def test_migration_again_copies_only_what_is_new(legacy_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "reviews.db"
    extracted.reviews.migrate(legacy_db, db)
    conn = sqlite3.connect(legacy_db)
    conn.execute(
        "INSERT INTO reviews (product_id, author, rating, text, created_at)"
        " VALUES (1, 'Late', 4, 'Arrived after the cut-over', '2025-02-01T09:30:00Z')"
    )
    conn.commit()
    conn.close()
    assert extracted.reviews.migrate(legacy_db, db) == {"products": 0, "reviews": 1}


def test_migration_from_a_missing_database_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="legacy database not found"):
        extracted.likes.migrate(tmp_path / "nope.db", tmp_path / "likes.db")


@pytest.mark.parametrize("service", ["reviews", "likes"])
def test_migrate_command(legacy_db: Path, tmp_path: Path, service: str) -> None:
    def migrate_command(source: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", f"extracted.{service}", "migrate", "--from", str(source)]
        command += ["--db", str(tmp_path / f"{service}.db")]
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)

    first = migrate_command(legacy_db)
    assert first.returncode == 0, first.stderr
    assert f"{PRODUCT_COUNT} new products" in first.stdout
    second = migrate_command(legacy_db)
    assert second.returncode == 0 and f"0 new products, 0 new {service}" in second.stdout
    missing = migrate_command(tmp_path / "nope.db")
    assert missing.returncode == 1 and "legacy database not found" in missing.stderr


async def test_service_migrates_an_empty_database_on_start(legacy_db: Path, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "extracted.likes", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--db", str(tmp_path / "likes.db"), "--migrate-from", str(legacy_db)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, process)
            async with session.get(f"{base}/api/likes/1") as response:
                assert response.headers["X-Served-By"] == "likes"
                body = await response.json()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
    assert body == {
        "product_id": 1,
        "count": rows(legacy_db, "SELECT COUNT(*) FROM likes WHERE product_id = 1")[0][0],
    }


# --- reviews next to the monolith -----------------------------------------------------------------------


async def test_reviews_differ_from_legacy_only_in_rounding_and_generated_at(
    legacy: TestClient, reviews: TestClient
) -> None:
    rounding_differs = []
    for product_id in range(1, 101):
        path = f"/api/products/{product_id}/reviews"
        (old_status, _, old), (new_status, _, new) = (
            await call(legacy, "GET", path),
            await call(reviews, "GET", path),
        )
        assert old_status == new_status == 200
        assert {k: v for k, v in old.items() if k not in NOISE} == {
            k: v for k, v in new.items() if k not in NOISE
        }
        assert old["generated_at"] != new["generated_at"]
        ratings = [item["rating"] for item in old["items"]]
        assert new["average"] == round(sum(ratings) / len(ratings), 1)
        assert abs(old["average"] - sum(ratings) / len(ratings)) <= 0.005 + 1e-9
        if old["average"] != new["average"]:
            rounding_differs.append(product_id)
    # The seed makes the difference visible on most products (every tenth keeps its natural draw).
    assert len(rounding_differs) >= 90
    assert set(range(1, 101)) - set(rounding_differs) <= {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}


async def test_reviews_errors_read_like_legacy(legacy: TestClient, reviews: TestClient) -> None:
    bad_inputs = [
        ("GET", "/api/products/9999/reviews", {}),
        ("POST", "/api/products/9999/reviews", {"json": {"author": "Sam", "rating": 4, "text": "x"}}),
        ("POST", "/api/products/1/reviews", {"json": {"author": "Sam", "rating": 9, "text": "x"}}),
        ("POST", "/api/products/1/reviews", {"json": {"rating": 3, "text": "x"}}),
        ("POST", "/api/products/1/reviews", {"json": {"author": "Sam", "rating": 3, "text": ""}}),
        (
            "POST",
            "/api/products/1/reviews",
            {"data": b"{oops", "headers": {"Content-Type": "application/json"}},
        ),
        ("DELETE", "/api/products/1/reviews", {}),
    ]
    for method, path, kwargs in bad_inputs:
        expected = await call(legacy, method, path, **kwargs)
        assert expected[1] == "application/problem+json"
        assert await call(reviews, method, path, **kwargs) == expected, (method, path, kwargs)


async def test_reviews_serves_only_its_paths(reviews: TestClient) -> None:
    async with reviews.get("/api/products/1") as response:
        assert response.status == 404 and response.headers["X-Served-By"] == "reviews"
        assert response.content_type == "application/problem+json"


async def test_posted_review_continues_the_migrated_ids(reviews: TestClient, legacy_db: Path) -> None:
    async with reviews.post(
        "/api/products/2/reviews", json={"author": "Sam", "rating": 2, "text": "Hm"}
    ) as post:
        assert post.status == 201 and post.headers["X-Served-By"] == "reviews"
        review = await post.json()
    assert review["id"] == rows(legacy_db, "SELECT MAX(id) FROM reviews")[0][0] + 1
    _, _, body = await call(reviews, "GET", "/api/products/2/reviews")
    assert body["items"][-1] == {k: review[k] for k in ("id", "author", "rating", "text", "created_at")}


async def test_reviews_shadow_request_writes_nothing(reviews: TestClient) -> None:
    _, _, before = await call(reviews, "GET", "/api/products/3/reviews")
    review = {"author": "Sam", "rating": 1, "text": "shadowed"}
    status, _, shadow = await call(reviews, "POST", "/api/products/3/reviews", json=review, headers=SHADOW)
    assert status == 201
    _, _, after = await call(reviews, "GET", "/api/products/3/reviews")
    assert after["items"] == before["items"] and after["count"] == before["count"]
    status, _, real = await call(reviews, "POST", "/api/products/3/reviews", json=review)
    assert status == 201 and real["id"] == shadow["id"]
    assert (await call(reviews, "GET", "/api/products/3/reviews"))[2]["count"] == before["count"] + 1


# --- likes next to the monolith -------------------------------------------------------------------------


async def test_likes_answer_exactly_like_legacy(legacy: TestClient, likes: TestClient) -> None:
    for product_id in range(1, 51):
        path = f"/api/likes/{product_id}"
        assert await call(likes, "GET", path) == await call(legacy, "GET", path)
    for user in ("fresh-user", "fresh-user", "user-0001"):
        body = {"json": {"user": user}}
        assert await call(likes, "POST", "/api/likes/8", **body) == await call(
            legacy, "POST", "/api/likes/8", **body
        )


async def test_likes_errors_read_like_legacy(legacy: TestClient, likes: TestClient) -> None:
    bad_inputs = [
        ("GET", "/api/likes/9999", {}),
        ("POST", "/api/likes/9999", {"json": {"user": "u"}}),
        ("POST", "/api/likes/1", {"json": {"user": ""}}),
        ("POST", "/api/likes/1", {"json": ["u"]}),
        ("GET", "/api/likes/abc", {}),
    ]
    for method, path, kwargs in bad_inputs:
        expected = await call(legacy, method, path, **kwargs)
        assert expected[0] >= 400
        assert await call(likes, method, path, **kwargs) == expected, (method, path, kwargs)


async def test_likes_served_by_and_health(likes: TestClient, reviews: TestClient) -> None:
    for client, name in ((likes, "likes"), (reviews, "reviews")):
        async with client.get("/healthz") as response:
            assert response.status == 200 and response.headers["X-Served-By"] == name
            assert await response.json() == {"status": "ok", "service": name}
    async with likes.get("/api/likes/1") as response:
        assert response.headers["X-Served-By"] == "likes"


async def test_likes_shadow_request_writes_nothing(likes: TestClient) -> None:
    _, _, before = await call(likes, "GET", "/api/likes/4")
    status, _, shadow = await call(likes, "POST", "/api/likes/4", json={"user": "shadow-fan"}, headers=SHADOW)
    assert status == 200 and shadow["count"] == before["count"] + 1
    assert (await call(likes, "GET", "/api/likes/4"))[2] == before
    await call(likes, "POST", "/api/likes/4", json={"user": "shadow-fan"})
    assert (await call(likes, "GET", "/api/likes/4"))[2] == shadow


# --- helpers for the process test -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_healthy(session: aiohttp.ClientSession, base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited before it became healthy"
        try:
            async with session.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{base} did not become healthy in time")


@pytest.mark.parametrize("side", ["legacy", "reviews"])
async def test_a_write_with_an_idempotency_key_is_applied_once_and_answered_as_the_first_time(
        side: str, legacy: TestClient, reviews: TestClient) -> None:
    client = {"legacy": legacy, "reviews": reviews}[side]
    key = "01938f3e-2a4b-7c1d-9e2f-0a1b2c3d4e5f"    # a UUIDv7, as the gateway generates
    body = {"author": "Idem", "rating": 4, "text": "once"}
    first = await client.post("/api/products/9/reviews", json=body, headers={"Idempotency-Key": key})
    assert first.status == 201
    created = await first.json()
    # The id comes from the key, the same on every side: a hash of it into [2^52, 2^53).
    assert created["id"] == extracted.common.id_from_key(key) and 1 << 52 <= created["id"] < 1 << 53
    # The answer is dated with the time the write recorded, which the gateway hands to the other side.
    assert first.headers["Date"] == email.utils.format_datetime(
        datetime.strptime(created["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC), usegmt=True)
    again = await client.post("/api/products/9/reviews", json={**body, "text": "twice"},
                              headers={"Idempotency-Key": key})
    assert again.status == 201 and await again.json() == created
    listed = await (await client.get("/api/products/9/reviews")).json()
    assert [item["id"] for item in listed["items"]].count(created["id"]) == 1


@pytest.mark.parametrize("side", ["legacy", "reviews"])
async def test_a_mirrored_write_is_stored_with_the_time_it_was_made(side: str, legacy: TestClient,
                                                                     reviews: TestClient) -> None:
    client = {"legacy": legacy, "reviews": reviews}[side]
    headers = {"X-Strangler-Sync": "1", "Idempotency-Key": "client-key-7", "Date": "Tue, 05 Mar 2024 10:15:00 GMT"}
    resp = await client.post("/api/products/9/reviews", json={"author": "M", "rating": 5, "text": "mirrored"},
                             headers=headers)
    created = await resp.json()
    assert created["created_at"] == "2024-03-05T10:15:00Z"
    assert created["id"] == extracted.common.id_from_key("client-key-7")   # a client's own key works the same
    # Without the marker a client's Date is not trusted: the service's own clock.
    plain = await client.post("/api/products/9/reviews", json={"author": "N", "rating": 5, "text": "plain"},
                              headers={"Date": "Tue, 05 Mar 2024 10:15:00 GMT"})
    assert (await plain.json())["created_at"] != "2024-03-05T10:15:00Z"
