"""End to end with real processes: the monolith, an extracted service and `strangler up`, editing routes.yaml
under concurrent load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import free_port, process, wait_http

ROUTES = """\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
backends:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  reviews: {{url: "http://127.0.0.1:{reviews}"}}
fallback: legacy
routes:
  - name: reviews
    match:
      path: {{template: "/api/products/{{id}}/reviews"}}
      methods: [GET, POST]
    to: reviews
    stage: {stage}
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    ports = {name: free_port() for name in ("public", "admin", "legacy", "reviews")}
    legacy_db = tmp_path / "legacy.db"
    py = sys.executable
    with process([py, "-m", "legacy_app", "--port", str(ports["legacy"]), "--db", str(legacy_db)],
                 tmp_path / "legacy.log", cwd=tmp_path):
        wait_http(f"http://127.0.0.1:{ports['legacy']}/healthz")
        with process([py, "-m", "extracted.reviews", "--port", str(ports["reviews"]), "--db",
                      str(tmp_path / "reviews.db"), "--migrate-from", str(legacy_db)],
                     tmp_path / "reviews.log", cwd=tmp_path):
            wait_http(f"http://127.0.0.1:{ports['reviews']}/healthz")
            config = tmp_path / "routes.yaml"
            config.write_text(ROUTES.format(stage="legacy", **ports))
            with process([py, "-m", "gateway", "up", "-c", str(config)], tmp_path / "gateway.log",
                         cwd=tmp_path) as gw:
                wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
                yield {"ports": ports, "config": config, "gateway": gw, "dir": tmp_path}


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


async def load(base: str, stop: asyncio.Event, log: list[tuple[float, str, int]], errors: list[str],
               workers: int = 12) -> None:
    async def worker(i: int) -> None:
        async with aiohttp.ClientSession() as s:
            n = 0
            while not stop.is_set():
                n += 1
                started = time.monotonic()
                try:
                    async with s.get(f"{base}/api/products/{(i * 7 + n) % 50 + 1}/reviews") as resp:
                        body = await resp.read()
                        if resp.status != 200 or not body:
                            errors.append(f"{resp.status}: {body[:100]!r}")
                        log.append((started, resp.headers.get("X-Served-By", "?"), resp.status))
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors.append(repr(exc))

    await asyncio.gather(*(worker(i) for i in range(workers)))


def _config(ports: dict) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/api/config") as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def _until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` (bounded) while the load keeps running on the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.05)


async def test_edit_under_load_moves_traffic_without_failures(stack: dict) -> None:
    ports = stack["ports"]
    base = f"http://127.0.0.1:{ports['public']}"
    stop = asyncio.Event()
    log: list[tuple[float, str, int]] = []
    errors: list[str] = []
    runner = asyncio.create_task(load(base, stop, log, errors))
    await _until(lambda: len(log) >= 50, "load under way")
    edited = time.monotonic()
    atomic_write(stack["config"], ROUTES.format(stage="extracted", **ports))
    # Long enough after the edit to see where traffic settled (the assertions look past edited + 2 s).
    await _until(lambda: sum(1 for t, _, _ in log if t > edited + 2.0) >= 50, "traffic after the edit")
    # An invalid edit: the gateway keeps the last good table and says so.
    atomic_write(stack["config"], ROUTES.format(stage="extracted", **ports).replace("stage:", "stgae:"))
    await _until(lambda: not _config(ports)["last_reload"]["ok"], "the failed reload reported")
    stop.set()
    await runner

    assert errors == []
    before = [who for t, who, _ in log if t < edited]
    assert before and set(before) == {"legacy"}
    legacy_after = [t - edited for t, who, _ in log if t >= edited and who == "legacy"]
    moved_within = max(legacy_after, default=0.0)
    print(f"traffic moved {moved_within:.2f}s after the edit; {len(log)} requests, {len(errors)} failed")
    assert moved_within < 2.0, f"legacy still answered {moved_within:.2f}s after the edit"
    assert [who for t, who, _ in log if t > edited + 2.0] and \
        {who for t, who, _ in log if t > edited + 2.0} == {"reviews"}

    status = _config(ports)
    assert status["generation"] == 2
    assert status["last_reload"]["ok"] is False
    assert "unknown key 'stgae'" in status["last_reload"]["error"]


async def test_sighup_reloads_and_check_agrees(stack: dict) -> None:
    ports = stack["ports"]
    text = ROUTES.format(stage="extracted", **ports)
    stack["config"].write_text(text)   # in place, not renamed: SIGHUP makes it explicit
    stack["gateway"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['public']}/api/products/3/reviews") as resp:
            if resp.headers["X-Served-By"] == "reviews":
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("SIGHUP did not apply the edit")
    check = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(stack["config"])],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
