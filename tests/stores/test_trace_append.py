"""The trace store only appends: a client ``traceparent`` that names a trace the gateway recorded before joins that
trace, and never replaces the spans already stored for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support import admin_url, public_url, run_gateway, serve_app, write_routes


def _backend() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    return app


async def _trace(session: aiohttp.ClientSession, gw: Any, trace_id: str) -> list[dict[str, Any]]:
    gw.tracing.store.flush(timeout=5)
    async with session.get(f"{admin_url(gw)}/api/traces/{trace_id}") as resp:
        assert resp.status == 200
        return (await resp.json())["spans"]


async def _get(session: aiohttp.ClientSession, url: str, traceparent: str | None = None) -> str:
    headers = {"traceparent": traceparent} if traceparent else {}
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["X-Trace-Id"]


def _servers(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if s["kind"] == "server"]


async def test_a_traceparent_naming_a_recorded_trace_joins_it_without_erasing_it(tmp_path: Path) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            trace_id = await _get(s, public_url(gw) + "/first")
            before = await _trace(s, gw, trace_id)
            assert len(_servers(before)) == 1

            # Someone who saw the X-Trace-Id sends two requests claiming to continue it, in one batch and in the
            # next: both join, and the first request's spans stay exactly as they were.
            claimed = f"00-{trace_id}-00f067aa0ba902b7-01"
            assert await _get(s, public_url(gw) + "/second", claimed) == trace_id
            assert await _get(s, public_url(gw) + "/third", claimed) == trace_id
            gw.tracing.store.flush(timeout=5)
            assert await _get(s, public_url(gw) + "/fourth", claimed) == trace_id
            after = await _trace(s, gw, trace_id)

            assert all(span in after for span in before)
            servers = _servers(after)
            assert sorted(sp["attributes"]["url.path"] for sp in servers) == ["/first", "/fourth", "/second",
                                                                             "/third"]
            assert [sp["parent_span_id"] for sp in servers if sp["attributes"]["url.path"] != "/first"] == \
                ["00f067aa0ba902b7"] * 3


async def test_requests_continuing_a_callers_new_trace_are_all_kept(tmp_path: Path) -> None:
    async with serve_app(_backend()) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            for n in range(3):
                assert await _get(s, public_url(gw) + f"/call/{n}", f"00-{trace_id}-00f067aa0ba902b7-01") == trace_id
            servers = _servers(await _trace(s, gw, trace_id))
            assert sorted(sp["attributes"]["url.path"] for sp in servers) == ["/call/0", "/call/1", "/call/2"]
            async with s.get(f"{admin_url(gw)}/api/traces?limit=10") as resp:
                listed = [t for t in await resp.json() if t["trace_id"] == trace_id]
            assert len(listed) == 1 and listed[0]["span_count"] == 6     # a server and a client span each
