"""Helpers for tests that run a real gateway in front of real loopback servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from aiohttp import web

from gateway.config import model as config_mod
from gateway.runtime.gateway import TOKEN_ENV, Gateway


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
        gw = Gateway(config_mod.load(path))
    else:
        previous = os.environ.get(TOKEN_ENV)
        os.environ[TOKEN_ENV] = token
        try:
            gw = Gateway(config_mod.load(path))
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
