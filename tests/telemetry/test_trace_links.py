"""Traces and comparisons link both ways: the trace API (and `strangler trace`) name the shadow comparison of a
trace, `strangler traces` shows the verdict, and a trace read before the services' spans arrive says so."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.admin.trace_status import LATE_S, awaiting
from tests.support import admin_url, public_url, run_gateway, serve_app, write_routes


def json_app(name: str, price: float) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"price": price}, headers={"X-Served-By": name})

    app = web.Application()
    app.router.add_get("/api/items/{id}", handler)
    return app


async def test_a_trace_links_to_its_comparison_and_the_cli_shows_the_verdict(tmp_path: Path) -> None:
    async with serve_app(json_app("legacy", 1.0)) as legacy, serve_app(json_app("items", 2.0)) as new:
        path = write_routes(tmp_path, f"""\
            backends:
              legacy: {{url: "{legacy}"}}
              items: {{url: "{new}"}}
            fallback: legacy
            tracing: {{sample: 100}}
            routes:
              - name: items
                match: {{path: {{prefix: /api/items}}}}
                to: items
                stage: shadow
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(public_url(gw) + "/api/items/1") as resp:
                trace_id = resp.headers["X-Trace-Id"]
            await gw.shadow.settle()
            trace = None
            for _ in range(250):      # the gateway's spans are written by a background writer
                async with s.get(admin_url(gw) + f"/api/traces/{trace_id}") as resp:
                    if resp.status == 200:
                        trace = await resp.json()
                        if trace["comparisons"]:
                            break
                await asyncio.sleep(0.02)
            assert trace is not None and trace["comparisons"], trace
            comparison = trace["comparisons"][0]
            assert comparison["verdict"] == "mismatch" and comparison["route"] == "items"
            async with s.get(admin_url(gw) + f"/api/diffs/{comparison['id']}") as resp:
                assert (await resp.json())["trace_id"] == trace_id       # and back
            # The services here export no spans: the gateway's attempts have nothing under them yet.
            assert trace["awaiting"]["state"] == "arriving"
            assert set(trace["awaiting"]["services"]) == {"legacy", "items"}

            host, port = gw.bound["admin"]
            env = {**os.environ, "COLUMNS": "200"}

            def cli(*args: str) -> str:
                out = subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(path), "--admin",
                                      f"{host}:{port}"], capture_output=True, text=True, timeout=60, env=env)
                assert out.returncode == 0, out.stderr
                return out.stdout

            listing = await asyncio.to_thread(cli, "traces")
            assert "shadow mismatch" in listing
            one = await asyncio.to_thread(cli, "trace", trace_id)
            assert f"shadow comparison #{comparison['id']}: mismatch" in one
            assert f"strangler diff {comparison['id']}" in one
            assert "still arriving" in one


def test_a_trace_whose_services_never_export_says_they_are_silent() -> None:
    client = {"span_id": "b", "parent_span_id": "a", "kind": "client", "end_ns": 1,
              "attributes": {"strangler.backend": "inventory", "http.response.status_code": 200}}
    server = {"span_id": "a", "parent_span_id": None, "kind": "server", "end_ns": 1, "attributes": {}}
    later = int((LATE_S + 1) * 1e9)
    assert awaiting([server, client], now_ns=later)["state"] == "silent"
    assert "docs/services.md" in awaiting([server, client], now_ns=later)["text"]
    child = {"span_id": "c", "parent_span_id": "b", "kind": "server", "end_ns": 1, "attributes": {}}
    assert awaiting([server, client, child], now_ns=later)["state"] == "complete"
