"""The sync journal of a fleet: two real gateway processes on one real PostgreSQL journal their synced writes in
the shared store. Every write either instance answered reaches the other side once, in the order it was
answered; killing the instance that delivers lets the other take over; ``/api/sync`` shows the same counts on
both. With the store unreachable, synced writes are refused (503) before either side sees them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.stores.api import JournalEntry
from gateway.stores.postgres.connect import conninfo
from gateway.stores.postgres.journal import PgJournal
from tests.stores.fleet_support import apoll, env_for, fleet, routes_text
from tests.stores.pg_cluster import PASSWORD, Cluster, cluster
from tests.support import Backend, refused_port, serve_app, two_backends, write_routes

pytestmark = pytest.mark.timeout(180)

SYNCED = "    stage: legacy\n    sync: {}\n"




class Mirrored:
    """The side writes are mirrored to: applies each ``Idempotency-Key`` once, in the order it takes them, and
    can be told to answer 503 (a side that is down)."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.received = 0
        self.status = 200

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            if request.headers.get("X-Strangler-Sync") != "1":
                return web.json_response({"ok": True})
            self.received += 1
            if self.status != 200:
                return web.Response(status=self.status)
            key = request.headers["Idempotency-Key"]
            if key not in self.applied:
                self.applied.append(key)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


async def _write(session: aiohttp.ClientSession, url: str, key: str) -> int:
    async with session.post(f"{url}/f/items", json={"key": key}, headers={"Idempotency-Key": key}) as resp:
        await resp.read()
        return resp.status


def _counts(inst: Any) -> dict[str, int]:
    row = next(r for r in inst.get("/api/sync")["routes"] if r["route"] == "feature")
    return {k: row[k] for k in ("pending", "delivered", "dead")}


async def test_two_instances_share_one_journal_and_one_deliverer(tmp_path: Path, db_url: str) -> None:
    new = Mirrored()
    async with serve_app(Backend("legacy").app()) as lu, serve_app(new.app()) as nu, aiohttp.ClientSession() as s:
        with fleet(tmp_path, db_url, routes_text(lu, nu, SYNCED), n=2) as (a, b):
            # Writes answered by both instances, one after the other: the order the other side must see.
            keys = [f"w-{i}" for i in range(30)]
            for i, key in enumerate(keys):
                assert await _write(s, (a, b)[i % 2].public_url, key) == 200
            await apoll(lambda: len(new.applied) == len(keys), 15)
            assert new.applied == keys
            assert new.received == len(keys)            # once each: one deliverer for the route
            await apoll(lambda: _counts(a) == _counts(b) == {"pending": 0, "delivered": 30, "dead": 0}, 10)
            # ``strangler sync ROUTE`` on either instance lists the fleet's entries, whichever answered them.
            for inst in (a, b):
                out = subprocess.run([sys.executable, "-m", "gateway", "sync", "feature", "--json", "--limit", "100",
                                      "-c", str(inst.config), "--admin", f"127.0.0.1:{inst.admin}"],
                                     capture_output=True, text=True, timeout=30, env=env_for(db_url))
                assert out.returncode == 0, out.stderr
                assert len(json.loads(out.stdout)["entries"]) == 30

            # The instance that delivered is the one whose own deliverer saw the lags.
            owner, other = (a, b) if a.get("/api/sync")["lag"]["p50_s"] is not None else (b, a)
            assert other.get("/api/sync")["lag"]["p50_s"] is None

            # The other side goes down; writes keep being taken (journaled) by both instances.
            new.status = 503
            more = [f"x-{i}" for i in range(10)]
            for i, key in enumerate(more):
                assert await _write(s, (a, b)[i % 2].public_url, key) == 200
            await apoll(lambda: new.received > 30, 10)
            assert _counts(other)["pending"] == 10
            # The delivering instance dies; the other takes the route over once the store sees its session end.
            assert owner.proc is not None
            owner.proc.kill()
            owner.proc.wait(10)
            new.status = 200
            await apoll(lambda: len(new.applied) == 40, 20)
            assert new.applied == keys + more
            await apoll(lambda: _counts(other) == {"pending": 0, "delivered": 40, "dead": 0}, 10)
            assert other.get("/api/sync")["lag"]["p50_s"] is not None


async def test_synced_writes_are_refused_while_the_store_is_unreachable(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import public_url, run_gateway

    monkeypatch.setenv("STRANGLER_STORE_URL", f"postgresql://strangler@127.0.0.1:{refused_port()}/strangler")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    legacy, new = Backend("legacy"), Backend("new")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu, aiohttp.ClientSession() as s:
        path = write_routes(tmp_path, two_backends(lu, nu, """\
            - name: feature
              match: {path: {prefix: /f}}
              to: new
              stage: legacy
              sync: {}
            """))
        async with run_gateway(path) as gw:
            url = public_url(gw)
            await apoll(lambda: not gw.stores.journal.available, 10)
            async with s.post(f"{url}/f/items", json={"a": 1}) as resp:
                assert resp.status == 503
                assert resp.content_type == "application/problem+json"
                assert "sync journal" in json.loads(await resp.read())["detail"]
            assert legacy.hits == new.hits == 0         # neither side saw the write
            async with s.get(f"{url}/f/items") as resp:   # reads are served as usual
                assert resp.status == 200
            assert legacy.hits == 1


async def test_appends_commit_in_seq_order_and_survive_a_second_journal(pg: Cluster, db_url: str) -> None:
    """Two journals on one store (two instances): appends get increasing seqs across both, and either reads the
    fleet's entries; only the holder of the route's lock is handed them, the other once the holder closes."""
    info = conninfo(db_url, None) + f" password={PASSWORD}"
    one, two = PgJournal(info, "one"), PgJournal(info, "two")
    try:
        def entry(i: int) -> JournalEntry:
            return JournalEntry(route="r", target="new", side="extracted", method="POST", raw_target=f"/f/{i}",
                                headers=[("Idempotency-Key", f"k{i}")], body=b"x", idem_key=f"k{i}",
                                answered_by="legacy", answered_status=200)
        seqs = []
        for i in range(6):
            seqs += await asyncio.wrap_future((one, two)[i % 2].append([entry(i)]))
        assert seqs == sorted(seqs)
        assert one.pending_routes() == two.pending_routes() == ["r"]
        first = one.next_pending("r")
        assert [e["raw_target"] for e in first] == [f"/f/{i}" for i in range(6)]
        assert first[0]["body"] == b"x" and first[0]["headers"] == [("Idempotency-Key", "k0")]
        assert two.next_pending("r") == []              # one deliverer per route
        one.delivered([(first[0]["seq"], 201)])
        assert one.summary() == two.summary()
        assert two.summary()["r"]["delivered"] == 1 and two.summary()["r"]["pending"] == 5
        one.close()
        deadline = time.monotonic() + 5
        while not two.next_pending("r"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert [e["raw_target"] for e in two.next_pending("r")] == [f"/f/{i}" for i in range(1, 6)]
    finally:
        one.close()
        two.close()


async def test_a_store_outage_refuses_synced_writes_only_and_they_resume_after(tmp_path: Path) -> None:
    new = Mirrored()
    legacy = Backend("legacy")
    with cluster() as pg:
        url = pg.create_database("outage")
        async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu, aiohttp.ClientSession() as s:
            with fleet(tmp_path, url, routes_text(lu, nu, SYNCED), n=1) as (a,):
                assert await _write(s, a.public_url, "before") == 200
                pg.stop()
                # Within a probe or two the journal knows; from then on a synced write is refused up front.

                async def refused_up_front() -> bool:
                    hits = legacy.hits
                    return await _write(s, a.public_url, f"down-{hits}") == 503 and legacy.hits == hits
                deadline = time.monotonic() + 10
                while not await refused_up_front():
                    assert time.monotonic() < deadline, "synced writes still reach a side during the outage"
                    await asyncio.sleep(0.1)
                async with s.get(f"{a.public_url}/f/items") as resp:   # everything else is served
                    assert resp.status == 200
                async with s.get(f"{a.admin_url}/api/sync") as resp:   # the surfaces say why, not a 500
                    assert resp.status == 503
                    assert "unreachable" in (await resp.json(content_type=None))["detail"]
                pg.start()
                pg.wait_up()
                deadline = time.monotonic() + 15
                while await _write(s, a.public_url, "after") != 200:
                    assert time.monotonic() < deadline, "synced writes still refused after the store came back"
                    await asyncio.sleep(0.2)
                await apoll(lambda: new.applied[-1:] == ["after"], 15)
                assert new.applied[0] == "before"
                assert not any(k.startswith("down-") for k in new.applied)
