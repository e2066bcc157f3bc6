"""The small lies and rough edges of the CLI a new user met: tables cut at 100 columns, `null` for a field that
is absent, a missing config file called invalid, history that says only "modified", blocks a stage ignores."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import public_url, run_gateway, serve_app, two_backends, write_routes

LONG_NAME = "product-recommendations-for-returning-customers"
LONG_TEMPLATE = "/api/products/{product_id}/recommendations/{kind}/for/{customer_segment}"


def json_app(name: str, body: dict) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body, headers={"X-Served-By": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def routes_body(legacy: str, new: str, weight: int) -> str:
    return two_backends(legacy, new, f"""\
        - name: {LONG_NAME}
          match: {{path: {{template: "{LONG_TEMPLATE}"}}}}
          to: new
          stage: shadow
        - name: likes
          match: {{path: {{prefix: /api/likes}}}}
          to: new
          stage: canary
          canary: {{weight: {weight}, sticky: {{header: X-User-Id}}}}
        """)


def cli(path: Path, gw: object, *args: str, columns: int = 200) -> subprocess.CompletedProcess:
    host, port = gw.bound["admin"]  # type: ignore[attr-defined]
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(path), "--admin", f"{host}:{port}"],
                          capture_output=True, text=True, timeout=60, env=env)


async def test_routes_at_100_columns_history_text_and_absent_fields(tmp_path: Path) -> None:
    async with serve_app(json_app("legacy", {"id": 1})) as legacy, \
            serve_app(json_app("new", {"id": 1, "extra": None})) as new:
        path = write_routes(tmp_path, routes_body(legacy, new, 10))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(public_url(gw) + "/api/products/1/recommendations/top/for/new") as resp:
                assert resp.status == 200
            await gw.shadow.settle()

            # 100 columns: nothing is cut to an ellipsis; the route name is whole on its line.
            out = await asyncio.to_thread(cli, path, gw, "routes", columns=100)
            assert out.returncode == 0, out.stderr
            assert "…" not in out.stdout, out.stdout
            assert max(len(line) for line in out.stdout.splitlines()) <= 100
            # Long names and templates wrap in their column: read down the column, they are whole.
            cells = [line.split("│") for line in out.stdout.splitlines() if "│" in line]
            names = "".join(c[0].strip() for c in cells)
            templates = "".join(c[1].strip() for c in cells)
            assert LONG_NAME in names, out.stdout
            assert LONG_TEMPLATE in templates, out.stdout

            # The other listings at 100 columns: nothing cut either; a trace id is whole (it is copied).
            for args in (("report",), ("traces",), ("diffs", LONG_NAME)):
                out = await asyncio.to_thread(cli, path, gw, *args, columns=100)
                assert out.returncode == 0, out.stderr
                assert "…" not in out.stdout, (args, out.stdout)
            traces = gw.stores.traces.list_traces(limit=5)
            out = await asyncio.to_thread(cli, path, gw, "traces", columns=100)
            assert traces and traces[0]["trace_id"] in out.stdout
            out = await asyncio.to_thread(cli, path, gw, "trace", traces[0]["trace_id"], columns=100)
            assert "…" not in out.stdout, out.stdout

            # A field only the new service has: its legacy value is absent, not null.
            samples = gw.stores.comparisons.list_samples(LONG_NAME)
            assert samples and samples[0]["differences"][0]["kind"] == "extra"
            out = await asyncio.to_thread(cli, path, gw, "diff", str(samples[0]["id"]))
            row = next(line for line in out.stdout.splitlines() if "$.extra" in line)
            assert "(absent)" in row and "null" in row, row     # legacy absent, new null

            # History says what changed, in the same words as the console.
            path.write_text(path.read_text().replace("weight: 10", "weight: 20"))
            for _ in range(250):
                if gw.table.generation == 2:
                    break
                await asyncio.sleep(0.02)
            out = await asyncio.to_thread(cli, path, gw, "history", "likes")
            assert "modified: weight 10 -> 20" in out.stdout, out.stdout


def test_up_names_a_missing_config_file(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "up", "-c", "/nonexistent.yaml"], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert "no config file at /nonexistent.yaml" in out.stderr
    assert "invalid" not in out.stderr


def test_check_warns_about_blocks_the_stage_does_not_use(tmp_path: Path) -> None:
    path = write_routes(tmp_path, """\
        backends:
          legacy: {url: "http://127.0.0.1:1"}
          new: {url: "http://127.0.0.1:2"}
        fallback: legacy
        routes:
          - name: likes
            match: {path: {prefix: /api/likes}}
            to: new
            stage: shadow
            canary: {weight: 10}
            guard: {min_requests: 5}
        """)
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "-c", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "canary: only applies in stage canary; in stage shadow it has no effect" in out.stderr
    assert "guard: in stage shadow judges the shadow copies" in out.stderr
    assert f"{path}:" in out.stderr
