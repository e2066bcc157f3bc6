"""Loopback servers and a gateway for the shadow tests: a recording fake service, misbehaving shadow targets
(hanging, refusing, resetting, slow, garbage) and a routes.yaml builder with a store in the test's directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.runtime.gateway import Gateway
from tests.support import admin_url, serve_app

Respond = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes


class FakeService:
    """A backend that records every request it gets and answers with ``respond`` (by default a JSON echo of the
    method, path and body digest, with a session cookie)."""

    def __init__(self, name: str, respond: Respond | None = None) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.respond = respond or self.echo
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path_qs, dict(request.headers),
                              [(k, v) for k, v in request.headers.items()], body))
        return await self.respond(request, body)

    async def echo(self, request: web.Request, body: bytes) -> web.StreamResponse:
        doc = {"method": request.method, "path": request.path, "size": len(body),
               "sha256": hashlib.sha256(body).hexdigest()}
        resp = web.json_response(doc, headers={"X-Served-By": self.name})
        resp.headers.add("Set-Cookie", "session=secret-session-value; Path=/")
        return resp

    def shadowed(self) -> list[Seen]:
        return [s for s in self.seen if s.headers.get("X-Shadow") == "1"]


def serve_cancelling(app: web.Application) -> contextlib.AbstractAsyncContextManager[str]:
    """Run an aiohttp app on 127.0.0.1:0 (handlers cancelled when the client goes away); yields its base URL."""
    return serve_app(app, handler_cancellation=True)


@contextlib.asynccontextmanager
async def raw_server(kind: str) -> AsyncIterator[tuple[str, list[int]]]:
    """A misbehaving TCP server: ``hang`` (reads, never answers), ``reset`` (closes with RST at once) or
    ``garbage`` (answers bytes that are not HTTP). Yields its URL and a one-element list counting connections."""
    accepted = [0]
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        writers.append(writer)
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
        if kind == "garbage":
            writer.write(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n\x00garbage")
            await writer.drain()
            writer.close()
            return
        with contextlib.suppress(Exception):
            await reader.read()  # hang: keep the connection open until the client gives up

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        for w in writers:
            w.transport.abort()
        server.close()
        await server.wait_closed()


def refused_url() -> str:
    """A loopback URL nothing listens on (a port bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def routes_yaml(directory: Path, legacy: str, shadow: str, routes: str) -> Path:
    """routes.yaml with loopback listeners on port 0, backends ``legacy`` and ``new``, the store in
    ``directory/store``; ``routes`` is the YAML of the routes list (dedented)."""
    text = textwrap.dedent(f"""\
        version: 1
        listen: 127.0.0.1:0
        admin: {{listen: 127.0.0.1:0}}
        store: {{dir: store}}
        backends:
          legacy: {{url: "{legacy}"}}
          new: {{url: "{shadow}", timeouts: {{connect: 1s, response: 5s}}}}
        fallback: legacy
        routes:
        """) + textwrap.indent(textwrap.dedent(routes), "  ")
    path = directory / "routes.yaml"
    path.write_text(text)
    return path



async def admin_json(gw: Gateway, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {gw.token}"}
    async with aiohttp.ClientSession() as s, s.request(method, admin_url(gw) + path, headers=headers, **kwargs) as r:
        assert r.status < 300, (r.status, await r.text())
        return json.loads(await r.read())


async def report_for(gw: Gateway, route: str) -> dict[str, Any]:
    rep = await admin_json(gw, "GET", "/api/report")
    return next(r for r in rep["routes"] if r["route"] == route)
