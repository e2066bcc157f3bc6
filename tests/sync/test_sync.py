"""Mirrored writes (``sync:``) through a real gateway between two recording backends on loopback: what is
mirrored and where, the markers, the journal's order and durability, dead letters, the 413, the shadow's dry run
first, and the admin surfaces."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config.parse import ConfigError, load
from gateway.stores.api import JournalEntry
from gateway.stores.journal import SQLiteJournal
from tests.support import admin_url, public_url, run_gateway, serve_app, two_backends, write_routes


class Recorder:
    """A backend that records every request it gets (method, path, headers, body) and answers ``status``."""

    def __init__(self, name: str, status: int = 200) -> None:
        self.name = name
        self.status = status
        self.seen: list[dict[str, Any]] = []
        self.got = asyncio.Event()

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            self.seen.append({"method": request.method, "path": request.path_qs, "headers": request.headers,
                              "body": body, "at": time.monotonic()})
            self.got.set()
            status = self.status if not request.headers.get("X-Strangler-Sync") else self.sync_status
            return web.json_response({"served_by": self.name}, status=status,
                                     headers={"X-Served-By": self.name})

        self.sync_status = 200
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    def writes(self) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["method"] != "GET"]

    def mirrored(self) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["headers"].get("X-Strangler-Sync") == "1"]


def routes_body(legacy: str, new: str, route: str) -> str:
    """A ``likes`` route on the product template; ``route`` adds its remaining keys (indented four spaces)."""
    return two_backends(legacy, new, """\
  - name: likes
    match: {path: {template: "/api/likes/{product_id}"}}
    to: new
""" + route)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def post(s: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with s.post(url, **kw) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Served-By", "")


@pytest.fixture
async def pair() -> Any:
    legacy, new = Recorder("legacy"), Recorder("new")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        yield legacy, new, lu, nu


async def test_shadow_stage_mirrors_a_completed_write_to_the_new_service(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {}\n"))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        status, by = await post(s, public_url(gw) + "/api/likes/7?x=1", json={"user": "u1"},
                                headers={"X-Strangler-Sync": "1"})   # a client cannot forge the marker
        assert (status, by) == (200, "legacy")
        await until(lambda: len(new.mirrored()) == 1)
        original, mirror = legacy.writes()[0], new.mirrored()[0]
        assert "X-Strangler-Sync" not in original["headers"]
        assert mirror["method"] == "POST" and mirror["path"] == "/api/likes/7?x=1"
        assert mirror["body"] == original["body"] == b'{"user": "u1"}'
        # One key for one write, on both sides; the gateway made it (a UUIDv7) because the client sent none.
        key = original["headers"]["Idempotency-Key"]
        assert mirror["headers"]["Idempotency-Key"] == key and key[14] == "7"
        # Reads are never mirrored.
        async with s.get(public_url(gw) + "/api/likes/7") as resp:
            assert resp.status == 200
        await gw.deliverer.settle()
        assert [r["method"] for r in new.seen if not r["headers"].get("X-Shadow")] == ["POST"]
        async with s.get(admin_url(gw) + "/api/sync") as resp:
            view = await resp.json()
        row = next(r for r in view["routes"] if r["route"] == "likes")
        assert (row["pending"], row["delivered"], row["dead"]) == (0, 1, 0)


async def test_a_failed_write_is_not_mirrored_and_a_client_key_is_kept(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {methods: [POST]}\n"))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        legacy.status = 400
        assert (await post(s, public_url(gw) + "/api/likes/1", data=b"x"))[0] == 400
        legacy.status = 200
        async with s.put(public_url(gw) + "/api/likes/1", data=b"not listed") as resp:
            assert resp.status == 200
        assert (await post(s, public_url(gw) + "/api/likes/2", data=b"y",
                           headers={"Idempotency-Key": "client-key-1"}))[0] == 200
        await gw.deliverer.settle()
        assert [(r["path"], r["headers"]["Idempotency-Key"]) for r in new.mirrored()] == [
            ("/api/likes/2", "client-key-1")]


async def test_canary_mirrors_to_the_side_that_did_not_answer_in_order(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    route = "    stage: canary\n    canary: {weight: 50, sticky: {param: product_id}}\n    sync: {}\n"
    path = write_routes(tmp_path, routes_body(lu, nu, route))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        answered: dict[int, str] = {}
        for i in range(40):
            product = i % 8
            _, by = await post(s, public_url(gw) + f"/api/likes/{product}", data=str(i).encode())
            # Sticky by entity: one product's writes all go to one side.
            assert answered.setdefault(product, by) == by
        assert set(answered.values()) == {"legacy", "new"}
        await gw.deliverer.settle()
        # Every write reached both sides, and each side got them in the order they were made.
        for side in (legacy, new):
            assert sorted(int(r["body"]) for r in side.writes()) == list(range(40))
            for product in range(8):
                bodies = [int(r["body"]) for r in side.writes() if r["path"] == f"/api/likes/{product}"]
                assert bodies == sorted(bodies)
        assert all(r["headers"].get("X-Strangler-Sync") == "1" for r in legacy.writes()
                   if answered[int(r["path"].rsplit("/", 1)[1])] == "new")


async def test_a_4xx_from_the_other_side_is_a_dead_letter_until_retried(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {}\n"))
    async with run_gateway(path, token="t0k") as gw, aiohttp.ClientSession() as s:
        new.sync_status = 409
        await post(s, public_url(gw) + "/api/likes/3", data=b"a")
        await post(s, public_url(gw) + "/api/likes/3", data=b"b")
        await gw.deliverer.settle()
        async with s.get(admin_url(gw) + "/api/sync", params={"route": "likes", "state": "dead"}) as resp:
            view = await resp.json()
        assert view["routes"][0]["dead"] == 2 and view["routes"][0]["pending"] == 0
        assert {e["last_status"] for e in view["entries"]} == {409}
        new.sync_status = 200
        host, port = gw.bound["admin"]
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "gateway", "sync", "retry", "likes", "-c", str(path),
                             "--admin", f"{host}:{port}"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "STRANGLER_ADMIN_TOKEN": "t0k"})
        assert out.returncode == 0, out.stderr
        assert "route likes: 2 dead letter(s) sent again" in out.stdout
        await gw.deliverer.settle()
        async with s.get(admin_url(gw) + "/api/sync", params={"route": "likes"}) as resp:
            row = (await resp.json())["routes"][0]
        assert (row["dead"], row["delivered"]) == (0, 2)
        # The retried letters went in their original order, with their original keys.
        sent = new.mirrored()
        assert [r["body"] for r in sent] == [b"a", b"b", b"a", b"b"]
        assert sent[0]["headers"]["Idempotency-Key"] == sent[2]["headers"]["Idempotency-Key"]
        async with s.post(admin_url(gw) + "/api/sync/nope/retry", headers={"Authorization": "Bearer t0k"}) as r:
            assert r.status == 404


async def test_the_other_side_down_is_retried_with_the_same_key(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    new.sync_status = 503
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {}\n"))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        await post(s, public_url(gw) + "/api/likes/3", data=b"a")
        await until(lambda: len(new.mirrored()) >= 3)
        new.sync_status = 200
        await gw.deliverer.settle()
        keys = {r["headers"]["Idempotency-Key"] for r in new.mirrored()}
        assert len(keys) == 1


async def test_a_synced_write_over_the_cap_is_refused_up_front(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {max_body: 1KiB}\n"))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        async with s.post(public_url(gw) + "/api/likes/1", data=b"x" * 2048) as resp:
            assert resp.status == 413
            assert "sync.max_body" in (await resp.json())["detail"]

        async def chunked() -> Any:
            for _ in range(4):
                yield b"y" * 512

        async with s.post(public_url(gw) + "/api/likes/1", data=chunked()) as resp:
            assert resp.status == 413      # a chunked body that grows past the cap: refused, not answered
        async with s.get(public_url(gw) + "/api/likes/1", data=b"x" * 2048) as resp:
            assert resp.status == 200     # reads are not synced: no cap
        await gw.deliverer.settle()
        assert new.mirrored() == []


async def test_a_shadowed_and_synced_write_sends_the_dry_run_first(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    route = "    stage: shadow\n    shadow: {methods: [POST]}\n    sync: {}\n"
    path = write_routes(tmp_path, routes_body(lu, nu, route))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        for i in range(5):
            await post(s, public_url(gw) + "/api/likes/4", data=str(i).encode())
        await gw.deliverer.settle()
        await gw.shadow.settle()
        marks = [("shadow" if r["headers"].get("X-Shadow") else "sync", r["body"]) for r in new.seen]
        for i in range(5):
            body = str(i).encode()
            assert marks.index(("shadow", body)) < marks.index(("sync", body))


async def test_rollback_keeps_delivering_to_the_monolith(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    legacy.sync_status = 503      # the monolith is down for mirrored writes while the route is extracted
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: extracted\n    sync: {}\n"))
    async with run_gateway(path, token="t0k") as gw, aiohttp.ClientSession() as s:
        for i in range(3):
            assert (await post(s, public_url(gw) + "/api/likes/5", data=str(i).encode()))[1] == "new"
        await until(lambda: len(legacy.mirrored()) >= 1)
        async with s.post(admin_url(gw) + "/api/routes/likes/rollback", headers={"Authorization": "Bearer t0k"},
                          json={"reason": "test"}) as resp:
            assert resp.status == 200
        async with s.get(admin_url(gw) + "/api/sync", params={"route": "likes"}) as resp:
            assert (await resp.json())["routes"][0]["pending"] == 3
        legacy.sync_status = 200
        await gw.deliverer.settle()
        # Every attempt is recorded: the failed ones, then the three that went through, in order.
        assert [r["body"] for r in legacy.mirrored()][-3:] == [b"0", b"1", b"2"]
        # After the rollback the monolith answers, and its writes go to the new service.
        assert (await post(s, public_url(gw) + "/api/likes/5", data=b"3"))[1] == "legacy"
        await gw.deliverer.settle()
        assert new.mirrored()[-1]["body"] == b"3"


async def test_metrics_show_the_journal(tmp_path: Path, pair: Any) -> None:
    legacy, new, lu, nu = pair
    new.sync_status = 503
    path = write_routes(tmp_path, routes_body(lu, nu, "    stage: shadow\n    sync: {}\n"))
    async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
        await post(s, public_url(gw) + "/api/likes/3", data=b"a")
        await until(lambda: gw.deliverer.summary.get("likes", {}).get("pending") == 1)
        async with s.get(admin_url(gw) + "/metrics") as resp:
            text = await resp.text()
        assert 'strangler_sync_pending{route="likes"} 1.0' in text
        assert "strangler_sync_oldest_pending_age_seconds" in text
        assert "strangler_sync_retries_events_total" in text


def test_journal_survives_a_reopen_in_order(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "journal.db")
    seqs = journal.append([JournalEntry("r", "new", "extracted", "POST", f"/x/{i}", [("A", "b")], b"body",
                                        f"k{i}", "legacy", 200) for i in range(5)]).result(5)
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    journal.delivered([(seqs[0], 200)])
    journal.close()
    again = SQLiteJournal(tmp_path / "journal.db")
    try:
        pending = again.next_pending("r")
        assert [e["raw_target"] for e in pending] == [f"/x/{i}" for i in range(1, 5)]
        assert pending[0]["headers"] == [("A", "b")] and pending[0]["idem_key"] == "k1"
        assert again.summary()["r"]["delivered"] == 1
        assert [(e["seq"], e["state"]) for e in again.entries("r", "delivered")] == [(seqs[0], "delivered")]
        assert [e["state"] for e in again.entries("r")] == ["pending"] * 4 + ["delivered"]
        # The retention removes delivered entries (here: at once), never pending ones.
        again.retention = 0.0
        again.delivered([(seqs[1], 200)])
        assert again.summary()["r"]["delivered"] == 0 and again.pending_count("r") == 3
    finally:
        again.close()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = write_routes(tmp_path, routes_body("http://127.0.0.1:1", "http://127.0.0.1:2",
                                              "    stage: canary\n    canary: {weight: 5, sticky: {param: id}}\n"
                                              "    sync: {methodz: [POST]}\n"))
    with pytest.raises(ConfigError) as err:
        load(path)
    text = "\n".join(err.value.problems)
    assert "sync.methodz" in text and "did you mean 'methods'" in text
    path = write_routes(tmp_path, routes_body("http://127.0.0.1:1", "http://127.0.0.1:2",
                                              "    stage: canary\n    canary: {weight: 5, sticky: {param: id}}\n"))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "canary.sticky.param': the route's path has no parameter 'id'; it has: product_id" in err.value.problems[0]


def test_drift_is_a_mismatch_a_mirrored_write_was_still_on_its_way_to() -> None:
    from gateway.sync.drift import classify

    samples = [
        {"id": 1, "at": 100.0, "path": "/api/likes/7", "shadow": {"ms": 2.0}},     # write delivered after the read
        {"id": 2, "at": 200.0, "path": "/api/likes/7?x=1", "shadow": {"ms": 2.0}},  # delivered after the read
        {"id": 3, "at": 300.0, "path": "/api/likes/7", "shadow": {"ms": 2.0}},     # delivered long before
        {"id": 4, "at": 100.0, "path": "/api/likes/8", "shadow": {"ms": 2.0}},     # no write to this entity
    ]
    writes = [("/api/likes/7", 99.9, 100.5), ("/api/likes/7", 199.99, 200.01), ("/api/likes/7", 250.0, 250.1)]
    assert classify(samples, writes) == {"mismatches": 4, "drift": 2, "real": 2, "drift_samples": [1, 2]}
