"""The shadow report scoped after a fix: since a time, since routes.yaml last changed the route (exactly the
route's current version), cleared; fields a new ignore rule covers shown as such; every rate with its window and
denominator; no latency for a route with nothing compared."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import admin_url, public_url, run_gateway, serve_app, write_routes


def json_app(name: str, price: float) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "price": price}, headers={"X-Served-By": name})

    app = web.Application()
    app.router.add_get("/api/items/{id}", handler)
    return app


def body(legacy: str, new: str, ignore: str = "") -> str:
    return f"""\
backends:
  legacy: {{url: "{legacy}"}}
  items: {{url: "{new}"}}
  other: {{url: "{new}"}}
fallback: legacy
routes:
  - name: items
    match: {{path: {{prefix: /api/items}}}}
    to: items
    stage: shadow
    shadow: {{compare: {{ignore: ["header:Date"{ignore}]}}}}
  - name: quiet
    match: {{path: {{prefix: /api/quiet}}}}
    to: other
    stage: shadow
"""


async def report(s: aiohttp.ClientSession, gw, **query: str) -> dict:  # noqa: ANN001
    async with s.get(admin_url(gw) + "/api/report", params=query) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    return {r["route"]: r for r in data["routes"]}


async def test_report_since_reload_since_a_time_and_cleared(tmp_path: Path) -> None:
    async with serve_app(json_app("legacy", 9.99)) as legacy, serve_app(json_app("items", 10.0)) as new:
        path = write_routes(tmp_path, body(legacy, new))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            url = public_url(gw) + "/api/items/1"
            for _ in range(10):
                async with s.get(url) as resp:
                    assert resp.status == 200
            await gw.shadow.settle()
            before = (await report(s, gw))["items"]
            assert before["compared"] == 10 and before["verdicts"] == {"mismatch": 10}
            assert before["window"] == "everything stored"
            assert before["match"]["text"] == "0.0% of 10 compared, everything stored"
            # Nothing compared: no latency, and the rate says so.
            quiet = (await report(s, gw))["quiet"]
            assert quiet["compared"] == 0 and quiet["match"]["rate"] is None

            # The fix: an ignore rule for the field. The whole-store report now shows it as covered.
            write_routes(tmp_path, body(legacy, new, ', "$.price"'))

            async def reloaded() -> bool:
                return gw.table.generation == 2

            for _ in range(200):
                if await reloaded():
                    break
                await asyncio.sleep(0.02)
            assert await reloaded()
            for _ in range(5):
                async with s.get(url) as resp:
                    assert resp.status == 200
            await gw.shadow.settle()

            everything = (await report(s, gw))["items"]
            assert everything["compared"] == 15
            price = next(f for f in everything["fields"] if f["field"] == "$.price")
            assert price["ignored_by_rule"] is True
            assert "$.price" in everything["ignore_rules"] and "header:date" in everything["ignore_rules"]

            since_reload = (await report(s, gw, since="reload", route="items"))["items"]
            assert since_reload["compared"] == 5, since_reload
            assert since_reload["verdicts"] == {"ignored": 5}
            assert since_reload["match"]["rate"] == 100.0
            assert since_reload["window"].startswith("since routes.yaml last changed this route")

            recent = (await report(s, gw, since="10m"))["items"]
            assert recent["compared"] == 15 and recent["window"] == "last 10m"
            async with s.get(admin_url(gw) + "/api/report", params={"since": "soon"}) as resp:
                assert resp.status == 400
                assert "duration" in (await resp.json())["detail"]

            host, port = gw.bound["admin"]
            env = {**os.environ, "STRANGLER_ADMIN_TOKEN": gw.token, "COLUMNS": "200"}

            def cli(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(path), "--admin",
                                       f"{host}:{port}"], capture_output=True, text=True, timeout=60, env=env)

            out = await asyncio.to_thread(cli, "report", "--since-reload")
            assert out.returncode == 0, out.stderr
            assert "since routes.yaml last changed this route" in out.stdout
            assert "100.0% of 5 compared" in out.stdout
            out = await asyncio.to_thread(cli, "report")
            assert "(ignored by a rule now)" in out.stdout
            assert "ignored by rules in routes.yaml: $.price" in out.stdout
            quiet_row = next(line for line in out.stdout.splitlines() if line.strip().startswith("quiet"))
            assert [c.strip() for c in quiet_row.split("│")][-2:] == ["-/-", "-/-"], quiet_row

            out = await asyncio.to_thread(cli, "diffs", "items", "--clear")
            assert out.returncode == 0, out.stderr
            cleared = (await report(s, gw))["items"]
            assert cleared["compared"] == 0 and cleared["fields"] == []
            out = await asyncio.to_thread(cli, "diffs", "items", "--json")
            assert json.loads(out.stdout) == []
