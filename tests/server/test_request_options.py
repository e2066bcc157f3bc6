"""The routes.yaml switches for what clients may send, on a running gateway: ``limits.underscores_in_headers``
(drop, refuse, pass), ``limits.path_parameters`` (strip, refuse, keep) and ``limits.max_request_head``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from tests.support import public_url, run_gateway, serve_app, write_routes


def _recorder(seen: list[dict]) -> web.Application:
    async def record(request: web.Request) -> web.Response:
        seen.append({"path": request.raw_path, "headers": [k.decode() for k, _ in request.raw_headers]})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, limits: str) -> AsyncIterator[tuple[str, list[dict], list[dict]]]:
    legacy_seen: list[dict] = []
    admin_seen: list[dict] = []
    async with serve_app(_recorder(legacy_seen)) as legacy, serve_app(_recorder(admin_seen)) as admin:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{legacy}"}}, admin: {{url: "{admin}"}}}}
            fallback: legacy
            limits: {{{limits}}}
            routes:
              - name: admin
                match: {{path: {{prefix: /admin}}}}
                to: admin
                stage: extracted
            """)
        async with run_gateway(path) as gw:
            yield public_url(gw), legacy_seen, admin_seen


async def raw(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def get(target: str, *fields: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + "".join(f"{f}\r\n" for f in fields)
            + "\r\n").encode()


async def test_underscores_dropped_by_default(tmp_path: Path) -> None:
    async with gateway(tmp_path, "") as (url, seen, _):
        assert (await raw(url, get("/u", "X_User: root", "X-User: alice")))[0] == 200
    assert "X_User" not in seen[0]["headers"] and "X-User" in seen[0]["headers"]


async def test_underscores_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, "underscores_in_headers: refuse") as (url, seen, _):
        status, body = await raw(url, get("/u", "X_User: root"))
        assert status == 400 and "underscore" in json.loads(body)["detail"]
        assert (await raw(url, get("/u", "X-User: alice")))[0] == 200
    assert len(seen) == 1


async def test_underscores_passed_except_spellings_of_guarded_headers(tmp_path: Path) -> None:
    async with gateway(tmp_path, "underscores_in_headers: pass") as (url, seen, _):
        assert (await raw(url, get("/u", "X_User: root", "X_Forwarded_For: 1.2.3.4", "Transfer_Encoding: x")))[0] \
            == 200
    assert "X_User" in seen[0]["headers"]
    assert "X_Forwarded_For" not in seen[0]["headers"] and "Transfer_Encoding" not in seen[0]["headers"]


async def test_path_parameters_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, "path_parameters: refuse") as (url, legacy, admin):
        for target in ("/admin;x=1", "/public/..;/admin", "/a;jsessionid=1"):
            status, body = await raw(url, get(target))
            assert status == 400 and json.loads(body)["status"] == 400
        assert (await raw(url, get("/admin/x")))[0] == 200
    assert legacy == [] and [s["path"] for s in admin] == ["/admin/x"]


async def test_path_parameters_kept_as_ordinary_characters(tmp_path: Path) -> None:
    async with gateway(tmp_path, "path_parameters: keep") as (url, legacy, admin):
        assert (await raw(url, get("/admin;x=1")))[0] == 200
        assert (await raw(url, get("/public/..;/admin")))[0] == 200
    assert admin == [] and [s["path"] for s in legacy] == ["/admin;x=1", "/public/..;/admin"]


async def test_the_head_limit_is_configurable(tmp_path: Path) -> None:
    field = "X-Big: " + "b" * 6000
    async with gateway(tmp_path, "max_request_head: 4KiB") as (url, seen, _):
        status, body = await raw(url, get("/h", field))
        assert status == 431 and json.loads(body)["status"] == 431
        assert (await raw(url, get("/h", "X-Small: s")))[0] == 200
    assert [s["path"] for s in seen] == ["/h"]
