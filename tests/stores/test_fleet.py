"""Several gateways, one state: three real gateway processes on one real PostgreSQL (a throwaway cluster).

A rollback through one instance reaches the others within a second; the guard judges the fleet's traffic and
records one rollback; instances serving a different routes.yaml are flagged; ``strangler fleet`` lists them.
The store outage test is in test_fleet_outage.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.config.parse import load
from gateway.stores.open import open_stores
from gateway.stores.postgres.schema import LATEST, migrate
from tests.stores.fleet_support import (
    TOKEN,
    Instance,
    apoll,
    console_texts,
    env_for,
    fleet,
    routes_text,
    wait_ready,
)
from tests.stores.pg_cluster import PASSWORD, Cluster
from tests.support import Backend, free_port, process, serve_app, write_routes

pytestmark = pytest.mark.timeout(180)




def _open(tmp_path: Path, url: str, name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STRANGLER_STORE_URL", url)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    d = tmp_path / name
    d.mkdir()
    cfg = load(write_routes(d, 'backends: {legacy: {url: "http://127.0.0.1:1"}}\nfallback: legacy\n'))
    return open_stores(cfg, instance=name)


def test_migrations_are_applied_once_when_instances_start_together(pg: Cluster, db_url: str) -> None:
    versions: list[int] = []

    def start() -> None:
        with pg.connect(db_url.rsplit("/", 1)[1]) as conn:
            versions.append(migrate(conn))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert versions == [LATEST] * 4
    with pg.connect(db_url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (LATEST,)


async def test_two_stores_pinning_at_once_record_one_rollback(tmp_path: Path, db_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _open(tmp_path, db_url, "a", monkeypatch), _open(tmp_path, db_url, "b", monkeypatch)
    try:
        a.state.pin("feature", "fp", "guard", "error rate 100%")
        b.state.pin("feature", "fp", "guard", "error rate 100%")
        assert "feature" in a.state.pins and "feature" in b.state.pins   # each applied it at once
        await apoll(lambda: len([h for h in a.state.history("feature") if h["kind"] == "rollback"]) >= 1, 5)
        await asyncio.sleep(0.3)   # give a second, wrong, record the chance to appear
        rollbacks = [h for h in a.state.history("feature") if h["kind"] == "rollback"]
        assert len(rollbacks) == 1
        b.state.unpin("feature", "cli", "fixed")
        await apoll(lambda: "feature" not in a.state.pins, 1.0)
    finally:
        a.close()
        b.close()


async def test_a_rollback_through_one_instance_reaches_the_others_within_a_second(tmp_path: Path,
                                                                                  db_url: str) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        with fleet(tmp_path, db_url, routes_text(lu, nu, "    stage: extracted\n")) as (a, b, c):
            rollbacks, resumes = [], []
            for i in range(20):
                await asyncio.to_thread(a.post, "/api/routes/feature/rollback", {"reason": f"drill {i}"})
                took = await asyncio.gather(*(apoll(lambda x=x: x.route()["effective_stage"] == "legacy", 5, 0.01)
                                              for x in (b, c)))
                rollbacks.append(max(took))
                await asyncio.to_thread(a.post, "/api/routes/feature/resume", {})
                took = await asyncio.gather(*(apoll(lambda x=x: x.route()["effective_stage"] == "extracted", 5,
                                                    0.01) for x in (b, c)))
                resumes.append(max(took))
            print(f"\nrollback through A seen by B and C: worst of 20 {max(rollbacks) * 1000:.0f} ms, "
                  f"median {sorted(rollbacks)[10] * 1000:.0f} ms; resume: worst {max(resumes) * 1000:.0f} ms")
            assert max(rollbacks) < 1.0
            assert max(resumes) < 1.0
            # Every instance answers from legacy after a rollback: the pin is in effect, not only shown.
            await asyncio.to_thread(c.post, "/api/routes/feature/rollback", {"reason": "last"})
            await apoll(lambda: a.route()["effective_stage"] == "legacy", 1.0, 0.01)
            async with aiohttp.ClientSession() as s:
                for inst in (a, b, c):
                    async with s.get(inst.public_url + "/f/1") as resp:
                        assert resp.headers["X-Served-By"] == "legacy"
            history = await asyncio.to_thread(b.get, "/api/history?route=feature&limit=100")
            assert [h["kind"] for h in history].count("rollback") == 21


async def test_the_guard_judges_the_fleets_traffic_and_records_one_rollback(tmp_path: Path, db_url: str) -> None:
    legacy, new = Backend("legacy"), Backend("new", status=500)
    route = ("    stage: canary\n    canary: {weight: 100}\n"
             "    guard: {window: 60s, min_requests: 30, max_error_rate: 10%}\n")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        with fleet(tmp_path, db_url, routes_text(lu, nu, route)) as instances:
            async with aiohttp.ClientSession() as s:
                for inst in instances:   # 12 failures each: 36 in the fleet, fewer than 30 on any one
                    for _ in range(12):
                        async with s.get(inst.public_url + "/f/x") as resp:
                            await resp.read()
            took = await apoll(lambda: all(i.route()["effective_stage"] == "legacy" for i in instances), 10)
            print(f"\nguard rolled the fleet back {took:.2f}s after the last request")
            await asyncio.sleep(1.5)   # every instance has judged the same figures by now
            history = await asyncio.to_thread(instances[1].get, "/api/history?route=feature&limit=100")
            rollbacks = [h for h in history if h["kind"] == "rollback"]
            assert len(rollbacks) == 1, rollbacks
            assert rollbacks[0]["actor"] == "guard"
            assert rollbacks[0]["detail"]["figures"]["requests"] >= 30
            assert new.hits == 36

            # Fixed and resumed through B: no instance rolls back again on the failures from before the resume.
            new.status = 200
            await asyncio.to_thread(instances[1].post, "/api/routes/feature/resume", {})
            await apoll(lambda: all(i.route()["effective_stage"] == "canary" for i in instances), 1.0)
            async with aiohttp.ClientSession() as s:
                for inst in instances:
                    for _ in range(12):
                        async with s.get(inst.public_url + "/f/x") as resp:
                            assert resp.status == 200
            # (an instance that learns of the resume at its first request after it starts counting after that one)
            await apoll(lambda: all(i.route()["stats"]["extracted"]["requests"] >= 11 for i in instances), 5)
            await asyncio.sleep(2.5)   # two rounds of statistics shared: a wrong judgement would have happened
            assert all(i.route()["effective_stage"] == "canary" for i in instances)
            history = await asyncio.to_thread(instances[0].get, "/api/history?route=feature&limit=100")
            assert [h["kind"] for h in history if h["kind"] in ("rollback", "resume")] == ["resume", "rollback"]


async def test_fleet_lists_the_instances_and_flags_drift(tmp_path: Path, db_url: str) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        text = routes_text(lu, nu, "    stage: shadow\n")
        with fleet(tmp_path, db_url, text) as (a, b, c):
            view = await asyncio.to_thread(a.get, "/api/fleet")
            await apoll(lambda: len(a.get("/api/fleet")["instances"]) == 3, 5)
            view = await asyncio.to_thread(a.get, "/api/fleet")
            assert view["store"]["kind"] == "postgresql" and view["store"]["up"] is True
            assert PASSWORD not in str(view)
            assert not view["drift"]
            assert {i["address"] for i in view["instances"]} == {f"127.0.0.1:{x.public}" for x in (a, b, c)}
            # Comparisons are shared too: A reports the shadow copies of all three instances' requests.
            async with aiohttp.ClientSession() as s:
                for inst in (a, b, c):
                    for _ in range(5):
                        async with s.get(inst.public_url + "/f/1") as resp:
                            await resp.read()
            await apoll(lambda: [r["compared"] for r in a.get("/api/report")["routes"] if r["route"] == "feature"]
                        == [15], 10)
            # So are traces: A lists the requests every instance served, and shows one B served in full.
            await apoll(lambda: len(a.get("/api/traces?route=feature&limit=100")) == 15, 10)
            some = (await asyncio.to_thread(b.get, "/api/traces?route=feature&limit=1"))[0]["trace_id"]
            trace = await asyncio.to_thread(a.get, f"/api/traces/{some}")
            assert trace["trace_id"] == some and trace["spans"]
            # C is edited (and reloads); A and B still serve the old file.
            c.config.write_text(text + "# edited on one machine only\n")
            await apoll(lambda: a.get("/api/fleet")["drift"], 10)
            view = await asyncio.to_thread(a.get, "/api/fleet")
            drifting = [i["address"] for i in view["instances"] if i["drift"]]
            assert drifting == [f"127.0.0.1:{c.public}"]
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway", "fleet", "-c", str(a.config), "--admin",
                                 f"127.0.0.1:{a.admin}"], capture_output=True, text=True, timeout=30,
                env={**env_for(db_url), "COLUMNS": "200"})
            assert out.returncode == 0, out.stderr
            assert "DRIFT" in out.stdout and f"127.0.0.1:{c.public}" in out.stdout
            table, drift = await asyncio.to_thread(console_texts, f"{a.admin_url}/#/fleet",
                                                   ["#fleet-table", "#fleet-drift"])
            assert "drift" in table and f"127.0.0.1:{c.public}" in table and "this one" in table
            assert "different routes.yaml" in drift
            metrics = await asyncio.to_thread(_text, f"{a.admin_url}/metrics")
            assert "strangler_store_up 1.0" in metrics
            for inst in (a, b, c):
                log = "".join(p.read_text() for p in inst.directory.glob("gateway-*.log"))
                assert PASSWORD not in log and TOKEN not in log


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def test_worker_processes_are_instances_of_the_fleet(tmp_path: Path, db_url: str) -> None:
    """`--workers N` with a PostgreSQL store: each worker is an instance, and a rollback reaches every one."""
    legacy, new = Backend("legacy"), Backend("new")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        public, admin = free_port(), free_port()
        config = tmp_path / "routes.yaml"
        config.write_text(routes_text(lu, nu, "    stage: extracted\n"))
        args = [sys.executable, "-m", "gateway", "up", "-c", str(config), "--workers", "2", "--listen",
                f"127.0.0.1:{public}", "--admin", f"127.0.0.1:{admin}"]
        with process(args, tmp_path / "workers.log", env=env_for(db_url)):
            inst = Instance("w", tmp_path, public, admin)
            await asyncio.to_thread(wait_ready, inst)
            await apoll(lambda: len(inst.get("/api/fleet")["instances"]) == 2, 10)
            ids = sorted(m["id"] for m in (await asyncio.to_thread(inst.get, "/api/fleet"))["instances"])
            assert ids[0].endswith(":w0") and ids[1].endswith(":w1")
            await asyncio.to_thread(inst.post, "/api/routes/feature/rollback", {"reason": "drill"})
            rolled_back = time.monotonic()
            async with aiohttp.ClientSession() as s:
                async def served() -> set[str]:
                    seen = set()
                    for _ in range(40):   # new connections: the kernel spreads them over both workers
                        async with s.get(inst.public_url + "/f/1", headers={"Connection": "close"}) as resp:
                            seen.add(resp.headers["X-Served-By"])
                    return seen

                while (seen := await served()) != {"legacy"}:
                    assert time.monotonic() - rolled_back < 1.0, seen


def test_a_password_in_the_store_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write_routes(tmp_path, 'backends: {legacy: {url: "http://127.0.0.1:1"}}\nfallback: legacy\n'
                                  'store: {url: "postgresql://gw:hunter2@db:5432/strangler"}\n')
    path.write_text(path.read_text().replace("store: {dir: store}\n", ""))
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert "store.url" in out.stdout + out.stderr and "PGPASSWORD" in out.stdout + out.stderr
    assert "hunter2" not in out.stdout + out.stderr


def test_fleet_view_flags_stale_instances_and_the_minority_digest() -> None:
    from gateway.admin.fleet import STALE_S, fleet_view

    members = [{"id": "a", "digest": "d1", "age_s": 0.5}, {"id": "b", "digest": "d1", "age_s": 1.0},
               {"id": "c", "digest": "d2", "age_s": 0.2}, {"id": "gone", "digest": "d3", "age_s": STALE_S + 1}]
    view = fleet_view(members, {"up": True}, "a")
    flags = {m["id"]: (m["drift"], m["stale"], m["self"]) for m in view["instances"]}
    assert flags == {"a": (False, False, True), "b": (False, False, False), "c": (True, False, False),
                     "gone": (False, True, False)}
    assert view["drift"] and view["stale"] == 1 and view["reference_digest"] == "d1"
    # Two against two: no majority, so every live instance is flagged.
    tie = fleet_view(members[:3] + [{"id": "d", "digest": "d2", "age_s": 0.1}], {"up": True}, "a")
    assert all(m["drift"] for m in tie["instances"]) and tie["reference_digest"] is None
    assert not fleet_view(members[:2], {"up": True}, "a")["drift"]


def test_the_password_comes_from_a_file_and_a_wrong_one_is_an_outage_that_names_no_secret(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("STRANGLER_STORE_URL", raising=False)
    (tmp_path / "db.password").write_text(PASSWORD + "\n")
    body = ('backends: {legacy: {url: "http://127.0.0.1:1"}}\nfallback: legacy\n'
            f'store: {{dir: store, url: "{db_url}", password_file: db.password}}\n')
    path = write_routes(tmp_path, body)
    path.write_text(path.read_text().replace("store: {dir: store}\n", "", 1))
    stores = open_stores(load(path), instance="file")
    try:
        assert stores.members is not None and stores.members.status()["up"] is True
    finally:
        stores.close()
    (tmp_path / "db.password").write_text("not-the-password\n")
    stores = open_stores(load(path), instance="wrong")
    try:
        status = stores.members.status() if stores.members else {}
        assert status["up"] is False and "password authentication failed" in status["error"]
        assert "not-the-password" not in str(status) and PASSWORD not in str(status)
    finally:
        stores.close()
