"""Raw-socket testing of the public listener under each of aiohttp's HTTP parsers.

aiohttp picks its parser when it is imported: llhttp (C) when the extension is built, the pure-Python one with
``AIOHTTP_NO_EXTENSIONS=1``. A gateway process started with or without that variable is the only faithful way to
run both in one test session, so these helpers start ``python -m gateway up`` as a subprocess, in front of a
recording backend that runs in a thread of the test process, and speak to it with plain sockets so that every
byte is exactly what the test wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.support import free_port, wait_http

PARSERS = ("llhttp", "python")


def parser_env(parser: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AIOHTTP_NO_EXTENSIONS", None)
    if parser == "python":
        env["AIOHTTP_NO_EXTENSIONS"] = "1"
    return env


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes


class Backend:
    """An aiohttp backend on 127.0.0.1 in a thread of its own, recording every request it gets. Paths under
    ``/bare`` are answered without Content-Type and without Server (``/bare/big`` with a streamed body)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="wire-backend", daemon=True)

    def __enter__(self) -> Backend:
        self._thread.start()
        assert self._ready.wait(10), "backend did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        async def record(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append(Seen(request.method, request.raw_path, list(request.headers.items()), body))
            if request.path == "/bare/big":
                resp = web.StreamResponse()
                await resp.prepare(request)
                for _ in range(64):
                    await resp.write(b"z" * 4096)
                await resp.write_eof()
                return resp
            if request.path.startswith("/bare"):
                return web.Response(body=b"bare body")
            return web.json_response({"method": request.method, "path": request.raw_path, "size": len(body)})

        async def strip_invented(request: web.Request, response: web.StreamResponse) -> None:
            if request.path.startswith("/bare"):
                response.headers.popall("Server", None)
                response.headers.popall("Content-Type", None)

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(strip_invented)
        app.router.add_route("*", "/{tail:.*}", record)
        # Field limits above the gateway's, so the gateway's own limits are what a test meets.
        runner = web.AppRunner(app, access_log=None, max_line_size=65536, max_field_size=65536)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


@dataclass
class Gateway:
    parser: str
    public: int
    admin: int
    backend: Backend
    directory: Path
    proc: subprocess.Popen[bytes] = field(repr=False)


ROUTES = """\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
store: {{dir: store}}
limits: {{max_request_body: 1KiB}}
backends:
  legacy: {{url: "http://127.0.0.1:{backend}", timeouts: {{idle: 2s}}}}
  new: {{url: "http://127.0.0.1:{backend}/new"}}
fallback: legacy
routes:
  - name: admin
    match: {{path: {{prefix: /admin}}}}
    to: new
    stage: extracted
"""


@contextlib.contextmanager
def gateway_process(parser: str, directory: Path) -> Iterator[Gateway]:
    """``strangler up`` with the given aiohttp parser, in front of a recording ``Backend``."""
    with Backend() as backend:
        public, admin = free_port(), free_port()
        config = directory / "routes.yaml"
        config.write_text(ROUTES.format(public=public, admin=admin, backend=backend.port))
        with open(directory / "gateway.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gateway", "up", "-c", str(config)], cwd=directory,
                                    env=parser_env(parser), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{admin}/readyz")
            yield Gateway(parser, public, admin, backend, directory, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class Response:
    status_line: bytes
    headers: list[tuple[str, str]]
    body: bytes
    closed: bool | None       # the gateway closed the connection after it (None: not asked)

    @property
    def status(self) -> int:
        return int(self.status_line.split(b" ")[1])

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[0] if values else None


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket, buffered: bytearray | None = None, *, check_close: bool = False
                  ) -> Response:
    """One response from ``sock`` (framed by Content-Length or chunked); with ``check_close``, also whether the
    gateway then closes the connection."""
    buf = buffered if buffered is not None else bytearray()

    def fill() -> bool:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return False
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        if not fill():
            raise AssertionError(f"connection ended before a response head: {bytes(buf)[:300]!r}")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.split(b"\r\n")
    headers = [(k.decode("latin-1"), v.strip().decode("latin-1"))
               for k, _, v in (line.partition(b":") for line in lines[1:])]
    names = {k.lower(): v for k, v in headers}
    body = bytearray()
    if "content-length" in names:
        length = int(names["content-length"])
        while len(buf) < length:
            assert fill(), "connection ended inside a response body"
        body, buf[:] = buf[:length], buf[length:]
    elif names.get("transfer-encoding", "").lower() == "chunked":
        while True:
            while b"\r\n" not in buf:
                assert fill(), "connection ended inside a chunked body"
            size_line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                assert fill(), "connection ended inside a chunk"
                size_line, _, rest = bytes(buf).partition(b"\r\n")
            body += rest[:size]
            buf[:] = rest[size + 2:]
            if size == 0:
                break
    return Response(lines[0], headers, bytes(body), _closed(sock, buf) if check_close else None)


def _closed(sock: socket.socket, buf: bytearray, wait: float = 2.0) -> bool:
    """Whether the peer closes the connection (within ``wait`` seconds) with nothing more to say."""
    if buf:
        return False
    sock.settimeout(wait)
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.settimeout(5.0)
    if data:
        buf.extend(data)
        return False
    return True


def exchange(port: int, request: bytes, *, check_close: bool = False) -> Response:
    """Send ``request`` on a new connection exactly as given and read one response."""
    with connect(port) as sock:
        sock.sendall(request)
        return read_response(sock, check_close=check_close)


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def get(target: str = "/", *fields: str, method: str = "GET", version: str = "HTTP/1.1", host: str | None = "h",
        body: bytes = b"") -> bytes:
    """A raw request: request line, Host (unless None), ``fields``, blank line, body."""
    head = f"{method} {target} {version}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    return (head + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode("latin-1") + body


CHUNKED = "Transfer-Encoding: chunked"


# The probes: what each parser must refuse (with the status) and what both must accept.
REFUSED = {
    # Where the two parsers disagreed: each now gets the stricter answer, under both.
    "chunked-twice": (get("/", "Transfer-Encoding: chunked, chunked", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"),
                      400),
    "lower-case-method": (get(method="get"), 400),
    "unknown-method": (get(method="FOO"), 501),
    "double-space-before-target": (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "double-space-before-version": (b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    "raw-utf8-in-path": ("GET /caf\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n".encode(), 400),
    "chunk-size-overflow": (get("/", CHUNKED, method="POST", body=b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n"), 400),
    "content-length-as-trailer": (get("/", CHUNKED, method="POST", body=b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n"),
                                  400),
    # Transfer codings (RFC 9112 §6.1, §6.3) and framing, as nginx answers them.
    "gzip-then-chunked": (get("/", "Transfer-Encoding: gzip, chunked", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"),
                          501),
    "gzip-only": (get("/", "Transfer-Encoding: gzip", method="POST", body=b"abc"), 400),
    "chunked-and-length": (get("/", CHUNKED, "Content-Length: 3", method="POST", body=b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "chunked-in-http-1.0": (get("/", CHUNKED, method="POST", version="HTTP/1.0", body=b"3\r\nabc\r\n0\r\n\r\n"),
                            400),
    "two-lengths": (get("/", "Content-Length: 3", "Content-Length: 3", method="POST", body=b"abc"), 400),
    "bad-chunk-extension": (get("/", CHUNKED, method="POST", body=b"3;a b\r\nabc\r\n0\r\n\r\n"), 400),
    "connect": (get("h:443", method="CONNECT", host="h:443"), 501),
    # Malformed fields.
    "obs-fold": (get("/", "X-Folded: a", " b"), 400),
    "space-before-colon": (get("/", "X-Space : a"), 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: h\n\n", 400),
    # Host (RFC 9112 §3.2, RFC 3986 §3.2.2).
    "host-with-userinfo-and-path": (get(host="a@evil.com/x"), 400),
    "host-with-path": (get(host="evil.com/x"), 400),
    "host-list": (get(host="a.example,b.example"), 400),
    "host-port-out-of-range": (get(host="a.example:99999"), 400),
    "host-broken-ipv6": (get(host="[::1"), 400),
    "no-host": (get(host=None), 400),
    "two-hosts": (get("/", "Host: other"), 400),
    # Versions: answered in HTTP/1.1, and the connection closed (RFC 9110 §15.6.6, RFC 9112 §2.3).
    "http-2.0": (get(version="HTTP/2.0"), 505),
    "http-1.2": (get(version="HTTP/1.2"), 505),
    "http-3.0": (get(version="HTTP/3.0"), 505),
    "not-a-version": (get(version="HTTP/1.1x"), 400),
    # Sizes: the whole head, one field, the number of fields, the target.
    "head-of-1.9MB": (get("/", *(f"X-F{i}: {'a' * 16000}" for i in range(120))), 431),
    "field-over-16KiB": (get("/", f"X-Big: {'b' * 17000}"), 431),
    "101-fields": (get("/", *(f"X-F{i}: v" for i in range(101))), 431),
    "target-over-16KiB": (get("/" + "t" * 17000), 414),
    "body-over-max_request_body": (get("/", "Content-Length: 2048", method="POST"), 413),
}


ACCEPTED = {
    "head-just-under-64KiB": get("/", *(f"X-F{i}: {'a' * 10000}" for i in range(6))),
    "host-with-port": get(host="shop.example:8080"),
    "host-ipv6": get(host="[::1]:8080"),
    "host-empty": get(host=""),
    "webdav-method": get(method="PROPFIND"),
    "empty-line-before-request": b"\r\n" + get(),
    "chunked-with-extension-and-trailer": get("/", CHUNKED, method="POST",
                                              body=b"3;ext=1\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n"),
    "http-1.0": get(version="HTTP/1.0", host=None),
}
