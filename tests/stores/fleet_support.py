"""A fleet of real gateway processes on one PostgreSQL store, for the fleet tests.

Each instance has its own directory (its own ``store.dir``: the local copy of the state, the token file) and a
routes.yaml with the same bytes, so they serve the same digest; ports come from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.stores.pg_cluster import PASSWORD
from tests.support import free_port, process

TOKEN = "fleet-test-token"


def routes_text(legacy: str, new: str, route_extra: str) -> str:
    return f"""\
version: 1
listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
store: {{dir: store}}
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}"}}
fallback: legacy
routes:
  - name: feature
    match: {{path: {{prefix: /f}}}}
    to: new
{route_extra}"""


@dataclass
class Instance:
    name: str
    directory: Path
    public: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.directory / "routes.yaml"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    def args(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "up", "-c", str(self.config), "--listen",
                f"127.0.0.1:{self.public}", "--admin", f"127.0.0.1:{self.admin}"]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(self.admin_url + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def route(self, name: str = "feature") -> dict[str, Any]:
        return next(r for r in self.get("/api/routes") if r["name"] == name)


def env_for(url: str) -> dict[str, str]:
    return {"STRANGLER_STORE_URL": url, "PGPASSWORD": PASSWORD, "STRANGLER_ADMIN_TOKEN": TOKEN}


@contextlib.contextmanager
def run_instance(inst: Instance, url: str) -> Iterator[Instance]:
    with process(inst.args(), inst.directory / f"gateway-{int(time.time() * 1000)}.log",
                 env=env_for(url)) as proc:
        inst.proc = proc
        yield inst


@contextlib.contextmanager
def fleet(tmp_path: Path, url: str, text: str, n: int = 3) -> Iterator[list[Instance]]:
    instances = []
    for i in range(n):
        d = tmp_path / f"gw{'abc'[i]}"
        d.mkdir()
        (d / "routes.yaml").write_text(text)
        instances.append(Instance("abc"[i], d))
    with contextlib.ExitStack() as stack:
        for inst in instances:
            stack.enter_context(run_instance(inst, url))
        for inst in instances:
            wait_ready(inst)
        yield instances


def wait_ready(inst: Instance, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(inst.admin_url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert inst.proc is None or inst.proc.poll() is None, f"gateway {inst.name} exited"
        assert time.monotonic() < deadline, f"gateway {inst.name} not ready"
        time.sleep(0.05)


def poll(check: Any, timeout: float, interval: float = 0.01) -> float:
    """Call ``check()`` until it is true; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(interval)


async def apoll(check: Any, timeout: float, interval: float = 0.05) -> float:
    start = time.monotonic()
    while True:
        if await asyncio.to_thread(check):
            return time.monotonic() - start
        assert time.monotonic() - start < timeout, "condition not reached in time"
        await asyncio.sleep(interval)


def console_texts(url: str, selectors: list[str], timeout_ms: float = 10_000) -> list[str]:
    """Open the console at ``url`` in headless Chromium and return the text of each selector once it shows.
    Playwright's sync API refuses to run inside an event loop: call this through ``asyncio.to_thread``."""
    from playwright.sync_api import sync_playwright

    from tests.admin.test_console import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            out = []
            for selector in selectors:
                page.wait_for_selector(selector, timeout=timeout_ms)
                out.append(page.locator(selector).inner_text())
            return out
        finally:
            browser.close()
