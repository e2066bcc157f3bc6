"""The benchmark's upstream, in two builds that answer the same way:

``--server aiohttp`` (the default)
    a minimal aiohttp application on uvloop: the backend the issue's reference figures were measured with, and
    what most teams' services look like. It costs tens of microseconds per request, so on a 2-core machine it
    is what caps a cheap proxy like nginx.
``--server raw``
    an asyncio protocol on uvloop with httptools (a C HTTP/1.1 parser), a few microseconds per request, so that
    the backend never becomes the bottleneck and the proxy's own ceiling shows.

What it answers (HTTP/1.1, keep-alive unless the client says ``Connection: close``)::

    GET /bytes/{N}     N bytes, Content-Length framed, streamed from one reused 1 MiB buffer with backpressure
                       (a 1 GiB answer never exists in memory)
    any request with a body
                       the body is counted, never stored: {"received": N}
    anything else      the same 70-byte JSON document

``--delay SECONDS`` holds every answer back that long (a slow shadow target). ``--tls-cert FILE --tls-key FILE``
serves HTTPS; ``--close`` answers every request with ``Connection: close`` (a new connection, and over TLS a new
handshake, per request).

Run: ``python -m tests.bench.backend --port P [--server raw] [--delay 0.5]``; it prints ``ready`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl

import httptools
from aiohttp import web

# 70 bytes exactly: the payload the measurements were made with.
PAYLOAD = b'{"id":42,"name":"bench item","price":19.99,"stock":7,"tags":["a","b"]}'
assert len(PAYLOAD) == 70, len(PAYLOAD)
SERVERS = ("aiohttp", "raw")
CHUNK = memoryview(b"x" * (1024 * 1024))


def _head(status: str, length: int, keep_alive: bool, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: " + str(length).encode()
            + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n"))


# The hot answer is built once: the backend's per-request cost is one parser callback and one write.
JSON_ANSWER = _head("200 OK", len(PAYLOAD), True) + PAYLOAD
JSON_ANSWER_CLOSE = _head("200 OK", len(PAYLOAD), False) + PAYLOAD


class HttpServer(asyncio.Protocol):
    """One client connection. Requests are answered in order; while an answer is pending (delay, streaming),
    reading is paused so a pipelining client cannot get answers out of order."""

    def __init__(self, delay: float, close: bool = False) -> None:
        self.delay = delay
        self.close_each = close
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.received = 0
        self.has_body = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(_head("400 Bad Request", 0, False))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.can_write.set()
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # -- httptools callbacks -----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.received = 0
        self.has_body = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.has_body = True
        self.received += len(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive() and not self.close_each
        if self.has_body or self.received:
            body = json.dumps({"received": self.received}).encode()
            self._answer(_head("200 OK", len(body), keep_alive) + body, keep_alive)
        elif self.url.startswith(b"/bytes/"):
            self._start(self._stream(int(self.url[7:].split(b"?")[0] or 0), keep_alive))
        else:
            self._answer(JSON_ANSWER if keep_alive else JSON_ANSWER_CLOSE, keep_alive)

    # -- answers -----------------------------------------------------------------------------------------------

    def _answer(self, data: bytes, keep_alive: bool) -> None:
        if self.delay > 0:
            self._start(self._delayed(data, keep_alive))
            return
        if self.transport is not None:
            self.transport.write(data)
            if not keep_alive:
                self._close()

    def _start(self, coro: object) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        self.task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]

    async def _delayed(self, data: bytes, keep_alive: bool) -> None:
        await asyncio.sleep(self.delay)
        self._finish(data, keep_alive)

    async def _stream(self, size: int, keep_alive: bool) -> None:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.transport is None:
            return
        self.transport.write(_head("200 OK", size, keep_alive, b"application/octet-stream"))
        left = size
        while left > 0 and self.transport is not None:
            await self.can_write.wait()
            if self.transport is None:
                return
            n = min(left, len(CHUNK))
            self.transport.write(CHUNK[:n])
            left -= n
        self._finish(b"", keep_alive)

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        self.task = None
        if self.transport is None:
            return
        if data:
            self.transport.write(data)
        if keep_alive:
            self.transport.resume_reading()
        else:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def aiohttp_app(delay: float, close: bool = False) -> web.Application:
    """The same answers as ``HttpServer``, written as the plain aiohttp handler a service team would write."""

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = await _answer(request)
        if close:
            resp.force_close()
        return resp

    async def _answer(request: web.Request) -> web.StreamResponse:
        if delay > 0:
            await asyncio.sleep(delay)
        if request.can_read_body:
            received = 0
            async for chunk in request.content.iter_any():
                received += len(chunk)
            return web.json_response({"received": received})
        if request.path.startswith("/bytes/"):
            return await _stream_bytes(request, int(request.path[7:] or 0))
        return web.Response(body=PAYLOAD, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def _stream_bytes(request: web.Request, size: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = size
    await resp.prepare(request)
    left = size
    while left > 0:
        n = min(left, len(CHUNK))
        await resp.write(CHUNK[:n])
        left -= n
    await resp.write_eof()
    return resp


async def serve(host: str, port: int, delay: float, server: str = "aiohttp", close: bool = False,
                tls: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    if server == "raw":
        listener = await loop.create_server(lambda: HttpServer(delay, close), host, port, backlog=4096,
                                            reuse_address=True, ssl=tls)
    else:
        runner = web.AppRunner(aiohttp_app(delay, close), access_log=None, handle_signals=False)
        await runner.setup()
        listener = await loop.create_server(runner.server, host, port, backlog=4096, reuse_address=True, ssl=tls)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with listener:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="benchmark upstream: 70-byte JSON, streamed bytes, body counter")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--server", choices=SERVERS, default=SERVERS[0],
                        help="aiohttp: a minimal aiohttp app (default); raw: httptools protocol, near-free")
    parser.add_argument("--close", action="store_true", help="close the connection after every answer")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (and --tls-key)")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    import uvloop

    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    uvloop.run(serve(args.host, args.port, args.delay, args.server, args.close, tls))


if __name__ == "__main__":
    main()
