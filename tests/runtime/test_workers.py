"""`strangler up --workers 2`: one port, two processes, one state: a rollback reaches both within a second, and
the guard judges their combined traffic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.support import Backend, free_port, process, serve_app, wait_listening, wait_ready


@contextlib.asynccontextmanager
async def workers(tmp_path: Path, route_extra: str, new: Backend) -> AsyncIterator[dict]:
    legacy = Backend("legacy")
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        public, admin = free_port(), free_port()
        config = tmp_path / "routes.yaml"
        config.write_text(f"""\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
backends:
  legacy: {{url: "{lu}"}}
  new: {{url: "{nu}"}}
fallback: legacy
routes:
  - name: feature
    match: {{path: {{prefix: /f}}}}
    to: new
{route_extra}""")
        log = tmp_path / "gateway.log"
        with process([sys.executable, "-m", "gateway", "up", "-c", str(config), "--workers", "2"], log) as proc:
            await wait_ready(f"http://127.0.0.1:{admin}/readyz", f"http://127.0.0.1:{public}/healthz",
                             timeout=40, proc=proc, log=log)
            await wait_listening(public, sockets=2)   # both workers, or the kernel sends everything to one
            yield {"public": f"http://127.0.0.1:{public}", "admin": f"127.0.0.1:{admin}", "config": config,
                   "legacy": legacy, "new": new}


def _route_view(admin: str, name: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/api/routes") as resp:
        return next(r for r in json.loads(resp.read()) if r["name"] == name)  # type: ignore[no-any-return]


async def served(url: str, n: int) -> list[str]:
    """``n`` requests on fresh connections, so the kernel spreads them over both workers."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        out = []
        for _ in range(n):
            async with s.get(url) as resp:
                await resp.read()
                out.append(resp.headers.get("X-Served-By", str(resp.status)))
        return out


async def test_rollback_reaches_every_worker_within_a_second(tmp_path: Path) -> None:
    async with workers(tmp_path, "    stage: extracted\n", Backend("new")) as w:
        assert set(await served(w["public"] + "/f", 20)) == {"new"}
        out = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "gateway", "rollback", "feature", "--reason", "workers", "-c", str(w["config"]),
            "--admin", w["admin"]], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        rolled_back = time.monotonic()
        # Workers re-read the state store every 0.5 s: within a second every one of them answers from legacy.
        # Polled rather than slept, so a loaded machine shows how late it was instead of a bare failure.
        # 40 fresh connections reach both workers (all 40 on one: odds of 2 in 2^40), so all-legacy means both.
        while set(seen := await served(w["public"] + "/f", 40)) != {"legacy"}:
            assert time.monotonic() - rolled_back < 5, f"still served by {set(seen)} 5 s after the rollback"
            await asyncio.sleep(0.1)
        took = time.monotonic() - rolled_back
        assert set(await served(w["public"] + "/f", 40)) == {"legacy"}
        assert took < 3.0, f"the rollback took {took:.1f}s to reach every worker"


async def test_guard_judges_the_combined_traffic_of_all_workers(tmp_path: Path) -> None:
    route = "    stage: canary\n    canary: {weight: 100}\n    guard: {window: 60s, min_requests: 30}\n"
    async with workers(tmp_path, route, Backend("new", status=500)) as w:
        # 40 failing requests spread over two workers: each saw fewer than min_requests on its own.
        first = await served(w["public"] + "/f", 40)
        assert first.count("new") == 40
        # Within a publishing round or two of the other worker's statistics, the next request's judgement sees
        # all 40 and the route is rolled back.
        deadline = time.monotonic() + 10
        while (after := await served(w["public"] + "/f", 5))[-1] != "legacy":
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.2)
        # The pin may have been taken by the other worker: the admin worker re-reads pins twice a second.
        while not (view := _route_view(w["admin"], "feature"))["rolled_back"]:
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.1)
        assert view["rolled_back"]["actor"] == "guard"
