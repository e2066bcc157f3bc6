"""Hot reload in process: file edits, atomic renames, symlink swaps, invalid edits, the admin reload endpoint, and
no failed request while tables are swapped under load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import admin_url, public_url, run_gateway, serve_app, two_backends, write_routes


def named_app(name: str) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=name, headers={"X-Served-By": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def routes_body(legacy: str, new: str, stage: str) -> str:
    return two_backends(legacy, new, f"""\
        - name: feature
          match: {{path: {{prefix: /feature}}}}
          to: new
          stage: {stage}
        """)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def served_by(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        assert resp.status == 200
        return resp.headers["X-Served-By"]


async def wait_for(predicate, timeout: float = 5.0) -> float:  # noqa: ANN001
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_edit_moves_traffic_and_bumps_generation(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "legacy"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            url = public_url(gw) + "/feature/1"
            assert await served_by(s, url) == "legacy"
            assert gw.table.generation == 1
            atomic_write(path, path.read_text().replace("stage: legacy", "stage: extracted"))

            async def moved() -> bool:
                return await served_by(s, url) == "new"

            assert await wait_for(moved) < 2.0
            assert gw.table.generation == 2
            async with s.get(admin_url(gw) + "/api/history") as resp:
                history = await resp.json()
            change = next(h for h in history if h["kind"] == "config")
            assert change["route"] == "feature"
            assert change["detail"]["fields"]["stage"] == ["legacy", "extracted"]


async def test_invalid_edit_keeps_serving_and_is_reported(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "extracted"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            url = public_url(gw) + "/feature/1"
            atomic_write(path, path.read_text().replace("stage: extracted", "stage: extrated"))

            async def failed() -> bool:
                async with s.get(admin_url(gw) + "/api/config") as resp:
                    return not (await resp.json())["last_reload"]["ok"]

            await wait_for(failed)
            async with s.get(admin_url(gw) + "/api/config") as resp:
                status = await resp.json()
            assert status["generation"] == 1
            assert f"{path}:13: route 'feature': key 'stage': expected one of" in status["last_reload"]["error"]
            assert await served_by(s, url) == "new"

            # `strangler routes` says so loudly.
            host, port = gw.bound["admin"]
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway", "routes", "-c", str(path), "--admin",
                                 f"{host}:{port}"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "LAST RELOAD FAILED" in out.stdout
            assert "stage" in out.stdout

            # Fixing the file recovers.
            atomic_write(path, path.read_text().replace("stage: extrated", "stage: legacy"))

            async def recovered() -> bool:
                return await served_by(s, url) == "legacy"

            await wait_for(recovered)
            assert gw.reloader.last is not None and gw.reloader.last.ok


async def test_symlink_swap_counts_as_an_edit(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        v1 = write_routes(tmp_path, routes_body(legacy, new, "legacy"), name="v1.yaml")
        v2 = write_routes(tmp_path, routes_body(legacy, new, "extracted"), name="v2.yaml")
        link = tmp_path / "routes.yaml"
        link.symlink_to(v1.name)
        async with run_gateway(link) as gw, aiohttp.ClientSession() as s:
            url = public_url(gw) + "/feature"
            assert await served_by(s, url) == "legacy"
            tmp_link = tmp_path / "routes.yaml.new"
            tmp_link.symlink_to(v2.name)
            os.replace(tmp_link, link)   # the way Kubernetes and deploy tools swap a config atomically

            async def moved() -> bool:
                return await served_by(s, url) == "new"

            await wait_for(moved)


async def test_admin_reload_needs_the_token(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "legacy"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.post(admin_url(gw) + "/api/reload") as resp:
                assert resp.status == 401
                assert resp.content_type == "application/problem+json"
            async with s.post(admin_url(gw) + "/api/reload", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with s.post(admin_url(gw) + "/api/reload",
                              headers={"Authorization": f"Bearer {gw.token}"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["ok"] is True
            token_file = tmp_path / "store" / "admin.token"
            assert token_file.read_text().strip() == gw.token
            assert token_file.stat().st_mode & 0o777 == 0o600


async def test_admin_is_not_reachable_through_the_public_listener(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "legacy"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(public_url(gw) + "/api/config") as resp:
                assert resp.headers["X-Served-By"] == "legacy"   # proxied, not answered by the admin API


async def test_no_request_fails_while_tables_swap(tmp_path: Path) -> None:
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "legacy"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            url = public_url(gw) + "/feature/x"
            stop = asyncio.Event()
            results: list[int] = []

            async def client() -> None:
                while not stop.is_set():
                    async with s.get(url) as resp:
                        await resp.read()
                        results.append(resp.status)

            clients = [asyncio.create_task(client()) for _ in range(8)]
            for i in range(20):
                stage = "extracted" if i % 2 == 0 else "legacy"
                text = routes_body(legacy, new, stage) + f"# edit {i}\n"
                atomic_write(path, path.read_text().split("backends:")[0] + text)
                await gw.reloader.reload("test")
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*clients)
            assert gw.table.generation >= 20
    assert results and all(status == 200 for status in results)


async def test_reverting_a_bad_edit_clears_the_failure(tmp_path: Path) -> None:
    """Break routes.yaml, then put the served bytes back (`git checkout routes.yaml`): the file on disk is the
    truth, so /api/config, `strangler routes` and POST /api/reload stop reporting the old error."""
    async with serve_app(named_app("legacy")) as legacy, serve_app(named_app("new")) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, "extracted"))
        good = path.read_text()
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async def last_reload() -> dict:
                async with s.get(admin_url(gw) + "/api/config") as resp:
                    return (await resp.json())["last_reload"]

            atomic_write(path, good.replace("stage: extracted", "stage: extrated"))

            async def failed() -> bool:
                return not (await last_reload())["ok"]

            await wait_for(failed)
            atomic_write(path, good)

            async def cleared() -> bool:
                return (await last_reload())["ok"]

            await wait_for(cleared)
            assert (await last_reload())["error"] is None
            assert gw.table.generation == 1          # nothing to swap: the file equals what is served
            async with s.post(admin_url(gw) + "/api/reload",
                              headers={"Authorization": f"Bearer {gw.token}"}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["ok"] is True
            assert (await gw.reloader.reload("signal")).ok       # what `kill -HUP` runs
            host, port = gw.bound["admin"]
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway", "routes", "-c", str(path), "--admin",
                                 f"{host}:{port}"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "LAST RELOAD FAILED" not in out.stdout
