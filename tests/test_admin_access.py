"""Who can reach the admin listener and what it leaves on disk: Host values that do not name the listener get 421
(DNS rebinding), ``admin.read_token`` puts reads behind the token too (the CLI and the console send it), state files
are private to the gateway's user, and hostile ids in admin URLs are 400/404, never 500."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

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


