"""A client that stops reading its download: the gateway gives up after the backend's idle timeout and resets the
connection, so the socket and the bytes queued for it are released at once instead of staying ESTABLISHED behind
a full TCP window for as long as the client likes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from aiohttp import web

from tests.support import public_url, run_gateway, serve_app, write_routes

BODY = 64 * 1024 * 1024      # far more than every buffer between the backend and a client that reads nothing
PIECE = b"x" * (256 * 1024)


def _big_download() -> web.Application:
    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BODY
        await resp.prepare(request)
        for _ in range(BODY // len(PIECE)):
            await resp.write(PIECE)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/big", download)
    return app


def tcp_sockets(local_port: int, remote_port: int) -> list[str]:
    """The states (hex, as in /proc/net/tcp: 01 ESTABLISHED, 04 FIN_WAIT1 ...) of the loopback sockets with this
    local and remote port."""
    states = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                states.append(state)
    return states


async def test_a_client_that_stops_reading_is_reset_within_the_idle_timeout(tmp_path: Path) -> None:
    async with serve_app(_big_download()) as backend:
        path = write_routes(tmp_path, f"""\
            backends:
              legacy: {{url: "{backend}", timeouts: {{idle: 1s}}}}
            fallback: legacy
            """)
        async with run_gateway(path) as gw:
            host, port = public_url(gw).removeprefix("http://").split(":")
            client = socket.socket()
            # A tiny receive window, and then no reading at all: the gateway's sends back up at once.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(client, (host, int(port)))
            client_port = client.getsockname()[1]
            await loop.sock_sendall(client, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            head = await asyncio.wait_for(loop.sock_recv(client, 1024), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert tcp_sockets(int(port), client_port) == ["01"]      # the gateway's side, ESTABLISHED

            # Within the idle timeout (plus slack for a loaded machine) the gateway's socket is gone altogether:
            # not ESTABLISHED, and not lingering in FIN_WAIT with the unsent queue either.
            started = time.monotonic()
            while tcp_sockets(int(port), client_port):
                assert time.monotonic() - started < 10, tcp_sockets(int(port), client_port)
                await asyncio.sleep(0.05)
            assert time.monotonic() - started >= 0.5

            # The client, reading again, finds a broken transfer: a reset (or an end) well short of the body.
            received = len(head)
            try:
                while data := await asyncio.wait_for(loop.sock_recv(client, 65536), 5):
                    received += len(data)
            except ConnectionResetError:
                pass
            client.close()
    assert received < BODY
