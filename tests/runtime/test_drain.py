"""`limits.drain`: after SIGTERM a gateway keeps serving for a while with /readyz at 503, so that a load balancer
takes it out of rotation before it stops listening; a second signal stops it at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import free_port, process, serve_app, wait_ready


def _legacy() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"served_by": "legacy"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, drain: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, str]]:
    async with serve_app(_legacy()) as legacy:
        public, admin = free_port(), free_port()
        config = tmp_path / "routes.yaml"
        config.write_text(f"""\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
limits: {{drain: {drain}}}
backends:
  legacy: {{url: "{legacy}"}}
fallback: legacy
""")
        with process([sys.executable, "-m", "gateway", "up", "-c", str(config)], tmp_path / "gateway.log") as proc:
            await wait_ready(f"http://127.0.0.1:{admin}/readyz")
            yield proc, f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}"


async def _status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as resp:
        await resp.read()
        return resp.status


async def _wait_exit(proc: subprocess.Popen[bytes], within: float) -> float:
    started = time.monotonic()
    while proc.poll() is None:
        assert time.monotonic() - started < within, f"still running {within}s after the signal"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_sigterm_drains_then_stops(tmp_path: Path) -> None:
    async with gateway(tmp_path, "2s") as (proc, public, admin):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            assert await _status(s, admin + "/readyz") == 200
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # Not ready any more, but still answering: the load balancer's health check sees 503 while clients
            # that have not been moved yet are still served.
            while await _status(s, admin + "/readyz") != 503:
                assert time.monotonic() - signalled < 1.5, "/readyz still 200 after SIGTERM"
                await asyncio.sleep(0.05)
            assert await _status(s, public + "/api/products/1") == 200
            assert proc.poll() is None
        waited = await _wait_exit(proc, 10)
        assert time.monotonic() - signalled >= 2.0   # served out the whole drain before stopping
        assert proc.returncode == 0
        assert waited > 0


async def test_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    async with gateway(tmp_path, "60s") as (proc, public, admin):
        async with aiohttp.ClientSession() as s:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 1.5
            while await _status(s, admin + "/readyz") != 503:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        await _wait_exit(proc, 10)   # far less than the 60 s drain
        assert proc.returncode == 0


async def test_without_drain_sigterm_stops_promptly(tmp_path: Path) -> None:
    async with gateway(tmp_path, "0s") as (proc, _public, _admin):
        proc.send_signal(signal.SIGTERM)
        await _wait_exit(proc, 10)
        assert proc.returncode == 0
