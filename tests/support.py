"""Helpers for tests that run a real gateway in front of real loopback servers, and the certificates the TLS tests
make at run time (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import ssl
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import trustme
from aiohttp import web

from gateway.config.parse import load
from gateway.runtime.gateway import TOKEN_ENV, Gateway

# The browser tests drive Debian's chromium through Playwright (no browser download).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_port() -> int:
    """A loopback port nothing listens on (bound and closed: the kernel refuses connections to it)."""
    return free_port()


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None,
                    **runner_kwargs: object) -> AsyncIterator[str]:
    """Run an aiohttp app on 127.0.0.1:0 (over HTTPS with ``ssl_context``); yields its base URL."""
    runner = web.AppRunner(app, access_log=None, **runner_kwargs)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if ssl_context is not None else 'http'}://{host}:{port}"
    finally:
        await runner.cleanup()


def write_routes(directory: Path, body: str, name: str = "routes.yaml") -> Path:
    """A routes.yaml with loopback listeners on port 0 and the store in ``directory``; ``body`` adds backends,
    fallback and routes (dedented)."""
    text = textwrap.dedent("""\
        version: 1
        listen: 127.0.0.1:0
        admin: {listen: 127.0.0.1:0}
        store: {dir: store}
        """) + textwrap.dedent(body)
    path = directory / name
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def run_gateway(path: Path, token: str | None = None) -> AsyncIterator[Gateway]:
    """A started gateway for ``path`` (stopped on exit); ``token`` fixes its admin token."""
    if token is None:
        gw = Gateway(load(path))
    else:
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token
        try:
            gw = Gateway(load(path))
        finally:
            if previous is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = previous
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def public_url(gw: Gateway) -> str:
    host, port = gw.bound["public"]
    return f"http://{host}:{port}"


def admin_url(gw: Gateway) -> str:
    host, port = gw.bound["admin"]
    return f"http://{host}:{port}"


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


async def wait_ready(*urls: str, timeout: float = 20.0, proc: subprocess.Popen | None = None,
                     log: Path | None = None) -> None:
    """Poll each URL until it answers below 500 (a gateway process that has bound its listeners). With ``proc``,
    a process that exited fails at once; the failure quotes the end of ``log``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        for url in urls:
            while True:
                try:
                    async with s.get(url) as resp:
                        if resp.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                exited = proc is not None and proc.poll() is not None
                if exited or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
                    raise AssertionError(f"{url} not ready" + (" (the process exited)" if exited else "")
                                         + (f"\n--- {log.name} ---\n{tail}" if tail else ""))
                await asyncio.sleep(0.1)


def listening_sockets(port: int) -> int:
    """How many sockets listen on a loopback TCP port (with SO_REUSEPORT, one per worker process)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:   # 0A: TCP_LISTEN
                count += 1
    return count


async def wait_listening(port: int, sockets: int, timeout: float = 20.0) -> None:
    """Poll until ``sockets`` listening sockets are bound on ``port``."""
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < sockets:
        assert time.monotonic() < deadline, f"fewer than {sockets} sockets listen on port {port}"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def process(args: list[str], log: Path, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A subprocess with its output in ``log`` (``env``: added to this process's environment); on exit, SIGTERM,
    then SIGKILL after 10 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


class Backend:
    """A loopback backend that names itself, counts hits and can be told to fail."""

    def __init__(self, name: str, status: int = 200, delay: float = 0.0) -> None:
        self.name = name
        self.status = status
        self.delay = delay
        self.hits = 0

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.hits += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            await request.read()
            return web.Response(status=self.status, text=self.name, headers={"X-Served-By": self.name})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


def two_backends(legacy: str, new: str, route: str, backend_extra: str = "") -> str:
    """A routes.yaml body with backends ``legacy`` and ``new`` and the given routes."""
    return f"""\
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}"{backend_extra}}}
fallback: legacy
routes:
{textwrap.indent(textwrap.dedent(route), "  ")}"""


@contextlib.asynccontextmanager
async def gateway_with(tmp_path: Path, legacy: Backend, new: Backend, route: str, backend_extra: str = ""
                       ) -> AsyncIterator[tuple[Gateway, Path]]:
    """A gateway with ``route`` between the two backends (both served on loopback); yields it and its routes.yaml."""
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        path = write_routes(tmp_path, two_backends(lu, nu, route, backend_extra))
        async with run_gateway(path) as gw:
            yield gw, path


async def get(s: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with s.get(url, **kw) as resp:  # type: ignore[arg-type]
        await resp.read()
        return resp.status, resp.headers.get("X-Served-By", "")


# -- TLS: certificates made at run time -----------------------------------------------------------------------


class Certs:
    """A trusted CA, an untrusted one, and files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def leaf(self, name: str, *identities: str, ca: trustme.CA | None = None,
             not_after: dt.datetime | None = None) -> tuple[Path, Path, trustme.LeafCert]:
        """A certificate for ``identities`` (default 127.0.0.1 and localhost), written as NAME.pem and NAME.key."""
        cert = (ca or self.ca).issue_cert(*(identities or ("127.0.0.1", "localhost")), not_after=not_after)
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        write_pair(cert, cert_path, key_path)
        return cert_path, key_path, cert

    def server_context(self, *identities: str, ca: trustme.CA | None = None, client_ca: trustme.CA | None = None,
                       not_after: dt.datetime | None = None) -> ssl.SSLContext:
        """A backend's context; with ``client_ca`` it requires a client certificate signed by it (mutual TLS)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (ca or self.ca).issue_cert(*(identities or ("127.0.0.1", "localhost")),
                                   not_after=not_after).configure_cert(ctx)
        if client_ca is not None:
            client_ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA (for talking to the gateway's HTTPS listener)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


def write_pair(cert: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    """Write a chain and key; through a temporary name and a rename, as renewal tools do."""
    for blob, path in ((b"".join(b.bytes() for b in cert.cert_chain_pems), cert_path),
                       (cert.private_key_pem.bytes(), key_path)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)


@contextlib.contextmanager
def refusing_server(ctx: ssl.SSLContext) -> Iterator[int]:
    """A TLS server on loopback that closes as nginx does when it refuses a client's certificate: it sends its alert,
    then reads what the client already sent before closing (lingering close), so the client reads the alert and not
    a reset. (An asyncio server aborts the connection without flushing the alert.) Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(2)
            conn = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            with contextlib.suppress(OSError):
                conn.do_handshake()
                conn.recv(65536)   # under TLS 1.3 the refusal comes here, after the client's handshake ended
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)
                for _ in range(100):
                    if not raw.recv(65536):
                        break
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
