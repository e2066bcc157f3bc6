"""Helpers for tests that run a real gateway in front of real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
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
async def serve_app(app: web.Application, **runner_kwargs: object) -> AsyncIterator[str]:
    """Run an aiohttp app on 127.0.0.1:0; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, **runner_kwargs)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
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


async def wait_ready(*urls: str, timeout: float = 20.0) -> None:
    """Poll each URL until it answers below 500 (a gateway process that has bound its listeners)."""
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
                assert time.monotonic() < deadline, f"{url} not ready"
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
def process(args: list[str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """A subprocess with its output in ``log``; on exit, SIGTERM, then SIGKILL after 10 s."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
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
