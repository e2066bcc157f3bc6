"""Who can reach the admin listener and what it leaves on disk: Host values that do not name the listener get 421
(DNS rebinding), ``admin.read_token`` puts reads behind the token too (the CLI and the console send it), state files
are private to the gateway's user, and hostile ids in admin URLs are 400/404, never 500."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config.parse import load
from gateway.runtime.gateway import Gateway
from tests.support import admin_url, public_url, run_gateway, serve_app, write_routes

TOKEN = "test-admin-token"


def _backend() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def _status(session: aiohttp.ClientSession, url: str, host: str | None = None, method: str = "GET",
                  token: str | None = None) -> tuple[int, str]:
    headers = {}
    if host is not None:
        headers["Host"] = host
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.request(method, url, headers=headers) as resp:
        await resp.read()
        return resp.status, resp.content_type


async def test_only_host_values_naming_the_admin_listener_are_answered(tmp_path: Path) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            admin: {{listen: 127.0.0.1:0, hosts: [strangler.internal, "ops.example:8443"]}}
            """.replace("admin: {listen: 127.0.0.1:0}\n", ""))
        async with run_gateway(path, token=TOKEN) as gw, aiohttp.ClientSession() as s:
            base = admin_url(gw)
            port = gw.bound["admin"][1]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}",
                         "strangler.internal", f"strangler.internal:{port}", "ops.example:8443"):
                assert await _status(s, base + "/api/routes", host) == (200, "application/json"), host
            # A page at evil.example whose name was re-resolved to 127.0.0.1 still sends its own name.
            for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "localhost",
                         f"localhost.evil.example:{port}", "ops.example:9999", f"{port}", "a@127.0.0.1"):
                for target in ("/api/routes", "/api/diffs", "/", "/console/app.js", "/metrics"):
                    assert await _status(s, base + target, host) == (421, "application/problem+json"), \
                        (host, target)
                status, _ = await _status(s, base + "/api/routes/fallback/rollback", host, "POST", TOKEN)
                assert status == 421


async def test_read_token_puts_reads_behind_the_token(tmp_path: Path) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            admin: {{listen: 127.0.0.1:0, read_token: true}}
            """.replace("admin: {listen: 127.0.0.1:0}\n", ""))
        async with run_gateway(path, token=TOKEN) as gw, aiohttp.ClientSession() as s:
            base = admin_url(gw)
            for target in ("/api/routes", "/api/diffs", "/api/traces", "/api/config", "/metrics"):
                assert (await _status(s, base + target))[0] == 401, target
                assert (await _status(s, base + target, token="wrong"))[0] == 401, target
                assert (await _status(s, base + target, token=TOKEN))[0] == 200, target
            # Health checks and the console's static files stay open: they hold no recorded data.
            for target in ("/healthz", "/readyz", "/", "/console/app.js"):
                assert (await _status(s, base + target))[0] == 200, target

            # The CLI sends the token it finds (here from the environment) on reads as well.
            env = {**os.environ, "STRANGLER_ADMIN_TOKEN": TOKEN}
            host, port = gw.bound["admin"]
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway", "routes", "--admin", f"{host}:{port}", "--json"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "fallback" in out.stdout


async def test_without_read_token_reads_stay_open(tmp_path: Path) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            """)
        async with run_gateway(path, token=TOKEN) as gw, aiohttp.ClientSession() as s:
            assert (await _status(s, admin_url(gw) + "/api/routes"))[0] == 200
            assert (await _status(s, admin_url(gw) + "/api/routes/fallback/resume", method="POST"))[0] == 401


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_state_files_are_private(tmp_path: Path) -> None:
    store = tmp_path / "store"
    # Left by an older version, readable by everyone: tightened on start.
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    (store / "state.db").touch()
    os.chmod(store / "state.db", 0o644)
    previous = os.umask(0o022)
    try:
        async with serve_app(_backend()) as up:
            path = write_routes(tmp_path, f"""\
                backends: {{legacy: {{url: "{up}"}}, new: {{url: "{up}"}}}}
                fallback: legacy
                routes:
                  - name: shadowed
                    match: {{path: {{prefix: /s}}}}
                    to: new
                    stage: shadow
                """)
            async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
                for _ in range(3):
                    async with s.get(public_url(gw) + "/s/1") as resp:
                        assert resp.status == 200
                gw.shadow.store.flush(timeout=5)
                gw.tracing.store.flush(timeout=5)
                files = sorted(p.name for p in store.iterdir())
                assert {"state.db", "diffs.db", "traces.db", "admin.token"} <= set(files), files
                assert any(name.endswith("-wal") for name in files), files
                assert _mode(store) == 0o700
                for name in files:
                    if (store / name).is_file():
                        assert _mode(store / name) == 0o600, (name, oct(_mode(store / name)))
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("target", "status"), [
    ("/api/diffs/99999999999999999999999", 404),
    ("/api/diffs/9223372036854775808", 404),
    ("/api/diffs/-9223372036854775809", 404),
    ("/api/diffs/1e5", 400),
    ("/console/app.js%00.css", 404),
    ("/console/%00", 404),
])
async def test_hostile_admin_urls_are_400_or_404(tmp_path: Path, target: str, status: int) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(admin_url(gw) + target) as resp:
                assert resp.status == status
                assert resp.content_type == "application/problem+json"


# --- the console with admin.read_token, in a real browser ----------------------------------------------------------


class _Thread:
    """A gateway on its own event loop in a background thread, for the sync Playwright API."""

    def __init__(self, config: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway: Gateway | None = None
        self.config = config

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> Gateway:
        async def start() -> Gateway:
            os.environ["STRANGLER_ADMIN_TOKEN"] = TOKEN
            try:
                gw = Gateway(load(self.config))
            finally:
                os.environ.pop("STRANGLER_ADMIN_TOKEN", None)
            await gw.start()
            return gw

        self.gateway = self.call(start())
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        if self.gateway is not None:
            self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def read_token_gateway(tmp_path: Path) -> Iterator[Gateway]:
    path = write_routes(tmp_path, """\
        backends: {legacy: {url: "http://127.0.0.1:9"}}
        fallback: legacy
        admin: {listen: 127.0.0.1:0, read_token: true}
        """.replace("admin: {listen: 127.0.0.1:0}\n", ""))
    with _Thread(path) as gw:
        yield gw


def test_the_console_asks_for_the_token_once_when_reads_need_it(read_token_gateway: Gateway) -> None:
    from playwright.sync_api import sync_playwright

    from tests.support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(admin_url(read_token_gateway) + "/")
            page.locator("#token-dialog").wait_for()
            page.fill("#token-input", TOKEN)
            page.click("#token-ok")
            page.wait_for_selector("#routes-table tr[data-route='fallback']")
            assert not page.locator("#token-dialog").is_visible()
            assert page.evaluate("sessionStorage.getItem('strangler.admin-token')") == TOKEN
            assert errors == []
        finally:
            browser.close()
