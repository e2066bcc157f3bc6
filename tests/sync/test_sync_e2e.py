"""Mirrored writes end to end, with the demo services and the gateway as real processes: a canary on likes and on
reviews leaves both databases equal and a rollback loses nothing; the other side down under write load; the
gateway killed with writes pending; the shadow comparison after a canary, with and without sync."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import free_port, wait_http

TOKEN = "sync-e2e-token"

ROUTES = """\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
store: {{dir: store}}
tracing: {{sample: 0%}}
backends:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  reviews: {{url: "http://127.0.0.1:{reviews}", timeouts: {{connect: 1s, response: 5s}}}}
  likes: {{url: "http://127.0.0.1:{likes}", timeouts: {{connect: 1s, response: 5s}}}}
fallback: legacy
routes:
  - name: reviews
    match:
      path: {{template: "/api/products/{{id}}/reviews"}}
      methods: [GET, POST]
    to: reviews
{reviews_route}
  - name: likes
    match: {{path: {{template: "/api/likes/{{product_id}}"}}}}
    to: likes
{likes_route}
"""

CANARY = "    stage: canary\n    canary: {weight: 50, sticky: {header: X-User-Id}}\n"
SYNC = "    sync: {}\n"
SHADOW = ("    stage: shadow\n    shadow:\n      compare:\n        ignore: [\"header:Date\"]\n"
          "        unordered: [{path: \"$.items\", by: id}]\n")


class Stack:
    """The monolith, both extracted services and the gateway as processes that a test can stop and start."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {n: free_port() for n in ("public", "admin", "legacy", "reviews", "likes")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config = tmp / "routes.yaml"
        self.legacy_db = tmp / "legacy.db"
        self.workers = 1

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> None:
        py = sys.executable
        args = {
            "legacy": [py, "-m", "legacy_app", "--port", str(self.ports["legacy"]), "--db", str(self.legacy_db)],
            "reviews": [py, "-m", "extracted.reviews", "--port", str(self.ports["reviews"]), "--db",
                        str(self.tmp / "reviews.db"), "--migrate-from", str(self.legacy_db)],
            "likes": [py, "-m", "extracted.likes", "--port", str(self.ports["likes"]), "--db",
                      str(self.tmp / "likes.db"), "--migrate-from", str(self.legacy_db)],
            "gateway": [py, "-m", "gateway", "up", "-c", str(self.config), "--workers", str(self.workers)],
        }[name]
        env = {**os.environ, "STRANGLER_ADMIN_TOKEN": TOKEN}
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(args, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        wait_http((self.url("admin") + "/readyz") if name == "gateway" else self.url(name) + "/healthz")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def up(self, likes_route: str, reviews_route: str = "    stage: legacy\n") -> None:
        self.config.write_text(ROUTES.format(likes_route=likes_route.rstrip("\n"),
                                             reviews_route=reviews_route.rstrip("\n"), **self.ports))
        for name in ("legacy", "reviews", "likes", "gateway"):
            self.start(name)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(self.config)], cwd=self.tmp,
                              capture_output=True, text=True, timeout=30,
                              env={**os.environ, "STRANGLER_ADMIN_TOKEN": TOKEN})

    def admin(self, path: str) -> Any:
        with urllib.request.urlopen(self.url("admin") + path, timeout=10) as resp:
            return json.loads(resp.read())

    def settled(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``GET /api/sync`` until nothing is pending; returns the per-route rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = {r["route"]: r for r in self.admin("/api/sync")["routes"]}
            if all(r["pending"] == 0 for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"still pending after {timeout}s: {rows}")
            time.sleep(0.1)

    def rows(self, db: str, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.tmp / db}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()


async def write_all(url: str, jobs: list[tuple[str, str, dict[str, Any]]], concurrency: int = 16
                    ) -> list[tuple[int, str, Any]]:
    """POST every (user, path, body) through ``url``, ``concurrency`` at a time; (status, served by, json)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(s: aiohttp.ClientSession, user: str, path: str, body: dict[str, Any]) -> tuple[int, str, Any]:
        async with slots, s.post(url + path, json=body, headers={"X-User-Id": user}) as resp:
            return resp.status, resp.headers.get("X-Served-By", ""), await resp.json(content_type=None)

    async with aiohttp.ClientSession() as s:
        return await asyncio.gather(*(one(s, *job) for job in jobs))


def likes_of(stack: Stack) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    legacy = set(stack.rows("legacy.db", "SELECT product_id, user FROM likes"))
    new = set(stack.rows("likes.db", "SELECT product_id, user_id FROM likes"))
    return legacy, new


@pytest.mark.parametrize("workers", [1, 2])
async def test_canary_on_likes_keeps_both_databases_equal_and_rollback_loses_nothing(stack: Stack,
                                                                                     workers: int) -> None:
    # With two worker processes both journal the writes they answer; the primary delivers them all.
    stack.workers = workers
    stack.up(CANARY + SYNC)
    rng = random.Random(18)
    jobs = [(f"sync-user-{i:03d}", f"/api/likes/{rng.randint(1, 40)}", {"user": f"sync-user-{i:03d}"})
            for i in range(200)]
    results = await write_all(stack.url("public"), jobs)
    assert all(status == 200 for status, _, _ in results)
    served = [by for _, by, _ in results]
    assert 60 < served.count("likes") < 140 and served.count("likes") + served.count("legacy") == 200
    rows = stack.settled()
    assert (rows["likes"]["delivered"], rows["likes"]["dead"]) == (200, 0)
    legacy, new = likes_of(stack)
    assert legacy == new                                       # the two databases agree for every product
    assert {(int(p.rsplit("/", 1)[1]), u) for u, p, _ in jobs} <= legacy

    out = stack.cli("rollback", "likes", "--reason", "test")
    assert out.returncode == 0, out.stderr
    assert "0 mirrored write(s) still pending" in out.stdout
    async with aiohttp.ClientSession() as s:
        # Every worker process picks the rollback up (within half a second): wait until 20 users in a row (half
        # of whom the canary would send to the new service) are answered by the monolith.
        deadline, in_a_row, n = time.monotonic() + 10, 0, 0
        while in_a_row < 20:
            assert time.monotonic() < deadline
            n += 1
            async with s.get(f"{stack.url('public')}/api/likes/1", headers={"X-User-Id": f"probe-{n}"}) as resp:
                in_a_row = in_a_row + 1 if resp.headers["X-Served-By"] == "legacy" else 0
        for product in range(1, 41):
            async with s.get(f"{stack.url('public')}/api/likes/{product}",
                             headers={"X-User-Id": f"reader-{product}"}) as resp:
                body = await resp.json()
                assert resp.headers["X-Served-By"] == "legacy"
                assert body["count"] == sum(1 for p, _ in legacy if p == product)


async def test_canary_on_reviews_keeps_ids_and_rows_equal_and_rollback_loses_nothing(stack: Stack) -> None:
    stack.up("    stage: legacy\n", CANARY + SYNC)
    rng = random.Random(19)
    jobs = [(f"rev-user-{i:03d}", f"/api/products/{rng.randint(1, 30)}/reviews",
             {"author": f"rev-user-{i:03d}", "rating": rng.randint(1, 5), "text": f"review number {i}"})
            for i in range(200)]
    results = await write_all(stack.url("public"), jobs)
    assert all(status == 201 for status, _, _ in results)
    assert {by for _, by, _ in results} == {"legacy", "reviews"}
    rows = stack.settled()
    assert (rows["reviews"]["delivered"], rows["reviews"]["dead"]) == (200, 0)
    legacy = set(stack.rows("legacy.db", "SELECT id, product_id, author, rating, text, created_at FROM reviews"))
    new = {(i, p, a, r, t, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c))) for i, p, a, r, t, c in
           stack.rows("reviews.db", "SELECT review_id, product_id, author, rating, body, created_at FROM reviews")}
    assert legacy == new          # same ids, same rows, same creation times on both sides
    created = {body["id"] for _, _, body in results}
    assert len(created) == 200 and created <= {row[0] for row in legacy}

    out = stack.cli("rollback", "reviews")
    assert out.returncode == 0, out.stderr
    async with aiohttp.ClientSession() as s:
        seen: set[int] = set()
        for product in range(1, 31):
            async with s.get(f"{stack.url('public')}/api/products/{product}/reviews") as resp:
                assert resp.headers["X-Served-By"] == "legacy"
                seen |= {item["id"] for item in (await resp.json())["items"]}
        assert created <= seen       # every review, whichever side took it, is visible through the monolith


async def test_the_other_side_down_for_10s_under_write_load(stack: Stack) -> None:
    stack.up("    stage: legacy\n", "    stage: extracted\n" + SYNC)   # mirrored writes go to the monolith
    stop = asyncio.Event()
    created: list[int] = []
    failures: list[str] = []

    async def writer(i: int) -> None:
        async with aiohttp.ClientSession() as s:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"author": f"down-{i}-{n}", "rating": 4, "text": "written while the monolith is down"}
                try:
                    async with s.post(f"{stack.url('public')}/api/products/{i + 1}/reviews", json=body) as resp:
                        if resp.status != 201:
                            failures.append(f"{resp.status} {await resp.text()}")
                        else:
                            created.append((await resp.json())["id"])
                except aiohttp.ClientError as exc:
                    failures.append(repr(exc))
                await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(writer(i)) for i in range(4)]
    await asyncio.sleep(1.0)
    stack.stop("legacy")
    down_at = time.monotonic()
    await asyncio.sleep(10.0)
    pending = stack.admin("/api/sync?route=reviews")["routes"][0]["pending"]
    await asyncio.to_thread(stack.start, "legacy")
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    assert time.monotonic() - down_at >= 10.0
    assert failures == []                                   # no client saw the outage
    assert pending > 50                                     # writes did wait for the monolith
    rows = stack.settled()
    assert (rows["reviews"]["delivered"], rows["reviews"]["dead"]) == (len(created), 0)
    ids = [i for (i,) in stack.rows("legacy.db", "SELECT id FROM reviews WHERE author LIKE 'down-%'")]
    assert sorted(ids) == sorted(created)                   # all delivered, none twice
    events = stack.rows("legacy.db", "SELECT COUNT(*) FROM events WHERE kind = 'review_posted' "
                                     "AND actor LIKE 'down-%'")
    assert events == [(len(created),)]                      # and none applied twice in effect


async def test_gateway_killed_with_writes_pending_delivers_them_after_restart(stack: Stack) -> None:
    stack.up("    stage: extracted\n" + SYNC)
    stack.stop("legacy")
    jobs = [(f"kill-{i}", f"/api/likes/{i % 10 + 1}", {"user": f"kill-{i}"}) for i in range(50)]
    results = await write_all(stack.url("public"), jobs)
    assert all(status == 200 and by == "likes" for status, by, _ in results)
    assert stack.admin("/api/sync?route=likes")["routes"][0]["pending"] == 50
    stack.stop("gateway", signal.SIGKILL)
    stack.start("legacy")
    stack.start("gateway")
    stack.settled()
    legacy, new = likes_of(stack)
    assert {(i % 10 + 1, f"kill-{i}") for i in range(50)} <= legacy
    assert legacy == new


async def shadow_match_rate(stack: Stack, products: range) -> float:
    """Read every product's likes through the gateway (route in stage shadow) and return the match rate."""
    async with aiohttp.ClientSession() as s:
        for product in products:
            async with s.get(f"{stack.url('public')}/api/likes/{product}") as resp:
                assert resp.status == 200
    deadline = time.monotonic() + 20
    while True:
        report = {r["route"]: r for r in stack.admin("/api/report")["routes"]}.get("likes")
        if report and report["compared"] >= len(products):
            return float(report["rates"].get("match", 0.0))
        assert time.monotonic() < deadline, report
        time.sleep(0.1)


@pytest.mark.parametrize("sync", [False, True])
async def test_shadow_after_a_canary_sees_only_real_differences_with_sync(stack: Stack, sync: bool) -> None:
    stack.up(CANARY + (SYNC if sync else ""))
    jobs = [(f"sh-{i}", f"/api/likes/{i % 40 + 1}", {"user": f"sh-{i}"}) for i in range(200)]
    assert all(status == 200 for status, _, _ in await write_all(stack.url("public"), jobs))
    stack.settled()
    text = stack.config.read_text().replace(CANARY.rstrip("\n") + "\n" + (SYNC if sync else ""),
                                            SHADOW + (SYNC if sync else ""))
    stack.config.write_text(text)
    out = stack.cli("check")
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 10
    while stack.admin("/api/routes")[1]["effective_stage"] != "shadow":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    rate = await shadow_match_rate(stack, range(1, 41))
    print(f"likes shadow match rate after a 50% canary of 200 likes, sync {'on' if sync else 'off'}: {rate}%")
    if sync:
        assert rate == 100.0
        out = stack.cli("report")
        assert out.returncode == 0, out.stderr
        assert "likes: sync 0 pending, 200 delivered, 0 dead" in out.stdout
    else:
        assert rate < 50.0      # data drift: the canary's writes reached one side only


async def test_verify_reads_both_sides_after_each_mirrored_write(stack: Stack) -> None:
    reviews = ("    stage: canary\n    canary: {weight: 50, sticky: {param: id}}\n"
               "    shadow:\n      compare:\n        ignore: [\"$.generated_at\"]\n"
               "        unordered: [{path: \"$.items\", by: id}]\n"
               "    sync: {verify: {path: \"/api/products/{id}/reviews\"}}\n")
    stack.up("    stage: legacy\n", reviews)
    jobs = [(f"v-{i}", f"/api/products/{i + 1}/reviews", {"author": f"v-{i}", "rating": 5, "text": "verified"})
            for i in range(30)]
    results = await write_all(stack.url("public"), jobs)
    assert all(status == 201 for status, _, _ in results)
    deadline = time.monotonic() + 30
    while True:
        row = stack.admin("/api/sync?route=reviews")["routes"][0]
        if sum(row["verified"].values()) == 30:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    entries = stack.admin("/api/sync?route=reviews&limit=100")["entries"]
    fields = {d["field"] for e in entries for d in e["verify"]["differences"]}
    # The items (ids, authors, times) agree on both sides; what differs is the average, which the new service
    # rounds to one decimal: a real difference between the services, not drift.
    assert fields <= {"$.average"}
    # "ignored": equal but for ignored fields (generated_at); the products whose average one decimal holds.
    assert set(row["verified"]) <= {"match", "ignored", "mismatch"} and row["verified"].get("mismatch", 0) > 0
    out = stack.cli("sync", "reviews")
    assert out.returncode == 0 and "verified" in out.stdout and "delivered" in out.stdout, out.stderr
