"""The shared store goes away for 10 s while three gateways serve traffic: no client request fails, /readyz stays
ready, the outage is shown, a rollback asked of one instance applies to it at once and reaches the others when
the store is back, an instance restarted during the outage starts on its local copy of the state, and nothing
written during the outage (history, statistics, pins) is lost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.stores.fleet_support import (
    Instance,
    apoll,
    console_texts,
    env_for,
    fleet,
    routes_text,
    run_instance,
    wait_ready,
)
from tests.stores.pg_cluster import cluster
from tests.support import Backend, serve_app

pytestmark = pytest.mark.timeout(240)

OUTAGE_S = 10.0
OTHER_ROUTE = """\
  - name: other
    match: {path: {prefix: /o}}
    to: new
    stage: extracted
"""


class Load:
    """Clients sending requests to every instance until stopped; counts answers and failures per instance."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.paused: set[str] = set()
        self.ok: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = asyncio.Event()

    async def client(self, n: int) -> None:
        async with aiohttp.ClientSession() as s:
            i = n
            while not self._stop.is_set():
                inst = self.instances[i % len(self.instances)]
                i += 1
                if inst.name in self.paused:
                    await asyncio.sleep(0.01)
                    continue
                path = "/f/1" if i % 2 else "/o/1"
                try:
                    async with s.get(inst.public_url + path) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.ok[inst.name] += 1
                        else:
                            self.failed.append(f"{inst.name} {path}: {resp.status}")
                except aiohttp.ClientError as exc:
                    self.failed.append(f"{inst.name} {path}: {exc!r}")
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()


async def _cli_routes(inst: Instance, url: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "routes", "-c", str(inst.config), "--admin",
                         f"127.0.0.1:{inst.admin}"], capture_output=True, text=True, timeout=30,
        env={**env_for(url), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _total(pg_conn) -> int:
    row = pg_conn.execute("SELECT sum(requests) FROM peer_stats WHERE side IN ('legacy', 'extracted')").fetchone()
    return int(row[0] or 0)


def _counted(pg_conn, instances: dict[str, str]) -> dict[str, int]:
    rows = pg_conn.execute("SELECT instance, sum(requests) FROM peer_stats WHERE side IN ('legacy', 'extracted') "
                           "GROUP BY instance").fetchall()
    by_id = dict(rows)
    return {name: int(by_id.get(iid, 0)) for name, iid in instances.items()}


async def test_store_outage_fails_no_request_and_loses_nothing(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    with cluster() as pg:
        url = pg.create_database("outage")
        async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
            text = routes_text(lu, nu, "    stage: extracted\n" + OTHER_ROUTE)
            with fleet(tmp_path, url, text) as (a, b, c):
                await apoll(lambda: len(a.get("/api/fleet")["instances"]) == 3, 5)
                ids = {m["address"]: m["id"] for m in a.get("/api/fleet")["instances"]}
                iid = {x.name: ids[f"127.0.0.1:{x.public}"] for x in (a, b, c)}
                # Before the outage: `other` is rolled back through B; every instance (and its local copy) has it.
                await asyncio.to_thread(b.post, "/api/routes/other/rollback", {"reason": "before the outage"})
                await apoll(lambda: c.route("other")["effective_stage"] == "legacy", 1.0)

                load = Load([a, b, c])
                clients = [asyncio.create_task(load.client(n)) for n in range(3)]
                await asyncio.sleep(1.0)
                down_at = time.time()
                await asyncio.to_thread(pg.stop)
                await apoll(lambda: not a.get("/api/fleet")["store"]["up"], 5)

                # The outage is shown; the gateways stay ready.
                for inst in (a, b, c):
                    assert (await asyncio.to_thread(inst.get, "/readyz"))["status"] == "ready"
                metrics = await asyncio.to_thread(_text, f"{a.admin_url}/metrics")
                assert "strangler_store_up 0.0" in metrics
                assert "STORE UNREACHABLE" in await _cli_routes(a, url)
                (banner,) = await asyncio.to_thread(console_texts, f"{a.admin_url}/#/fleet", ["#store-outage"])
                assert "store unreachable" in banner

                # A rollback asked of A applies to A at once.
                await asyncio.to_thread(a.post, "/api/routes/feature/rollback", {"reason": "during the outage"})
                assert (await asyncio.to_thread(a.route))["effective_stage"] == "legacy"
                assert (await asyncio.to_thread(b.route))["effective_stage"] == "extracted"
                # A failed reload on B is recorded in the history once the store is back.
                b.config.write_text(text + "  - {name: broken\n")
                await apoll(lambda: not b.get("/api/config")["last_reload"]["ok"], 10)
                b.config.write_text(text)

                # C restarts during the outage: it starts on its local copy (`other` still rolled back).
                load.paused.add("c")
                c.proc.terminate()
                await asyncio.to_thread(c.proc.wait, 15)
                with run_instance(c, url):
                    await asyncio.to_thread(wait_ready, c)
                    load.paused.discard("c")
                    assert (await asyncio.to_thread(c.route, "other"))["effective_stage"] == "legacy"
                    assert (c.directory / "store" / "fleet-state.json").stat().st_mode & 0o777 == 0o600
                    assert not (await asyncio.to_thread(c.get, "/api/fleet"))["store"]["up"]

                    await asyncio.sleep(max(0.0, down_at + OUTAGE_S - time.time()))
                    await asyncio.to_thread(pg.start)
                    back_at = time.time()

                    # Caught up: the rollback asked during the outage reaches B and C.
                    took = await apoll(lambda: all(x.route()["effective_stage"] == "legacy" for x in (b, c)), 15)
                    print(f"\nstore down {back_at - down_at:.1f}s; the outage's rollback reached B and C "
                          f"{took:.2f}s after it came back")
                    await asyncio.sleep(1.5)
                    await load.stop()
                    await asyncio.gather(*clients)
                    assert load.failed == []
                    assert sum(load.ok.values()) > 300, load.ok

                    history = await asyncio.to_thread(b.get, "/api/history?limit=500")
                    rollbacks = [h for h in history if h["kind"] == "rollback" and h["route"] == "feature"]
                    assert len(rollbacks) == 1 and rollbacks[0]["instance"] == iid["a"]
                    assert down_at <= rollbacks[0]["at"] <= back_at
                    failed = [h for h in history if h["kind"] == "reload_failed"]
                    assert failed and {h["instance"] for h in failed} == {iid["b"]}

                    # Statistics published during the outage were buffered, not lost: the store counts every
                    # request each instance answered, C's first life included (it left them in its local copy
                    # when it stopped, and its second life wrote them).
                    await load.stop()
                    with pg.connect("outage") as conn:
                        await apoll(lambda: _counted(conn, {"a": iid["a"], "b": iid["b"]})
                                    == {"a": load.ok["a"], "b": load.ok["b"]}, 10)
                        await apoll(lambda: _total(conn) == sum(load.ok.values()), 10)
                    fleet_view = await asyncio.to_thread(a.get, "/api/fleet")
                    assert fleet_view["store"]["up"] and fleet_view["store"]["dropped"] == 0
                    assert fleet_view["store"]["outages"] == 1


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()

