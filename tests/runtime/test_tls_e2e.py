"""HTTPS end to end with a real `strangler up` process (uvloop, as in production): the public listener over TLS in
front of an https:// backend; a renewed certificate is picked up without dropping open connections; a 5 MiB upload
and a 1 GiB download stream through both TLS hops with the gateway's memory bounded."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import Certs, free_port, process, serve_app, wait_http, write_pair

BLOCK = os.urandom(256 * 1024)
GIB = 1024 ** 3
UPLOAD = 5 * 1024 * 1024
RSS_GROWTH_LIMIT = 64 * 1024 * 1024   # what the gateway may grow by while 1 GiB passes through it


def backend_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest(),
                                  "proto": request.headers.get("X-Forwarded-Proto")})

    async def download(request: web.Request) -> web.StreamResponse:
        total = int(request.query["bytes"])
        resp = web.StreamResponse(headers={"Content-Length": str(total)})
        await resp.prepare(request)
        sent = 0
        while sent < total:   # bounded: total / 256 KiB writes
            part = BLOCK[: total - sent]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/download", download)
    return app


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


@pytest.fixture
async def https_gateway(tmp_path: Path, certs: Certs) -> AsyncIterator[dict[str, object]]:
    site_cert, site_key, _ = certs.leaf("site")
    public, admin = free_port(), free_port()
    async with serve_app(backend_app(), ssl_context=certs.server_context()) as backend:
        config = tmp_path / "routes.yaml"
        config.write_text(f"""\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
tls: {{cert: {site_cert}, key: {site_key}}}
backends:
  secure: {{url: "{backend}", tls: {{ca: {certs.ca_file}}}}}
fallback: secure
""")
        with gateway_process(config, tmp_path / "gateway.log") as pid:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/readyz")
            yield {"url": f"https://127.0.0.1:{public}", "port": public, "pid": pid, "site": (site_cert, site_key),
                   "log": tmp_path / "gateway.log"}


@contextlib.contextmanager
def gateway_process(config: Path, log: Path) -> Iterator[int]:
    with process([sys.executable, "-m", "gateway", "up", "-c", str(config)], log, cwd=config.parent) as proc:
        yield proc.pid


async def raw_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open (keep-alive) connection."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return int(head.split(b" ")[1]), await reader.readexactly(length)


def served_identities(writer: asyncio.StreamWriter) -> set[str]:
    cert = writer.get_extra_info("peercert")
    return {value for _kind, value in cert.get("subjectAltName", ())}


async def test_the_listener_serves_https_and_upstream_sees_https(https_gateway: dict, certs: Certs) -> None:
    async with aiohttp.ClientSession() as s, \
            s.post(https_gateway["url"] + "/echo", data=b"hello", ssl=certs.client_context()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"size": 5, "sha256": hashlib.sha256(b"hello").hexdigest(),
                                     "proto": "https"}
    assert f"gateway:  https://127.0.0.1:{https_gateway['port']}/" in Path(https_gateway["log"]).read_text()
    # Plain HTTP on the HTTPS port is not answered as if it were secure.
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(https_gateway["url"].replace("https", "http") + "/echo") as resp:
                await resp.read()


async def test_a_renewed_certificate_is_served_without_dropping_connections(https_gateway: dict,
                                                                             certs: Certs) -> None:
    ctx = certs.client_context()
    port = https_gateway["port"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    assert "renewed.example" not in served_identities(writer)
    assert (await raw_get(reader, writer, "/echo"))[0] == 200

    site_cert, site_key = https_gateway["site"]
    write_pair(certs.ca.issue_cert("127.0.0.1", "localhost", "renewed.example"), site_cert, site_key)

    renewed = False
    for _ in range(100):   # the gateway looks at the files every second
        r2, w2 = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        renewed = "renewed.example" in served_identities(w2)
        assert (await raw_get(r2, w2, "/echo"))[0] == 200
        w2.close()
        if renewed:
            break
        await asyncio.sleep(0.1)
    assert renewed, "the renewed certificate was never served"
    # The connection opened before the renewal is still open and still answers.
    assert (await raw_get(reader, writer, "/echo"))[0] == 200
    assert "renewed.example" not in served_identities(writer)
    writer.close()
    assert "listener certificate reloaded" in Path(https_gateway["log"]).read_text()


async def test_a_5_mib_upload_streams_through_tls(https_gateway: dict, certs: Certs) -> None:
    payload = os.urandom(UPLOAD)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, UPLOAD, 64 * 1024):
            yield payload[i:i + 64 * 1024]

    async with aiohttp.ClientSession() as s, \
            s.post(https_gateway["url"] + "/echo", data=body(), ssl=certs.client_context()) as resp:
        assert resp.status == 200
        assert await resp.json() == {"size": UPLOAD, "sha256": hashlib.sha256(payload).hexdigest(),
                                     "proto": "https"}


async def test_a_1_gib_download_streams_through_tls_with_bounded_memory(https_gateway: dict,
                                                                        certs: Certs) -> None:
    pid = https_gateway["pid"]
    ctx: ssl.SSLContext = certs.client_context()
    async with aiohttp.ClientSession() as s:
        async with s.get(https_gateway["url"] + f"/download?bytes={8 * 1024 * 1024}", ssl=ctx) as resp:
            assert len(await resp.read()) == 8 * 1024 * 1024   # warm: pools, buffers, TLS contexts in place
        before = rss(pid)
        peak = before
        received = 0
        async with s.get(https_gateway["url"] + f"/download?bytes={GIB}", ssl=ctx) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(1024 * 1024):   # bounded: ends with the body
                received += len(chunk)
                if received % (32 * 1024 * 1024) < len(chunk):
                    peak = max(peak, rss(pid))
    assert received == GIB
    print(f"1 GiB through TLS: gateway RSS {before / 2**20:.1f} MiB before, peak growth "
          f"{(peak - before) / 2**20:.1f} MiB")
    assert peak - before < RSS_GROWTH_LIMIT, f"gateway RSS grew by {(peak - before) / 2**20:.1f} MiB"


async def test_start_up_says_which_https_backend_fails_verification_and_why(tmp_path: Path, certs: Certs) -> None:
    public, admin = free_port(), free_port()
    async with serve_app(backend_app(), ssl_context=certs.server_context(ca=certs.other_ca)) as backend:
        config = tmp_path / "routes.yaml"
        config.write_text(f"""\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
backends:
  untrusted: {{url: "{backend}", tls: {{ca: {certs.ca_file}}}}}
fallback: untrusted
""")
        log = tmp_path / "gateway.log"
        with gateway_process(config, log):
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{admin}/readyz")
            for _ in range(200):   # the probe runs right after start-up
                if "unknown CA" in log.read_text():
                    break
                await asyncio.sleep(0.05)
    assert "backend untrusted: TLS with 127.0.0.1" in log.read_text()
    assert "unknown CA" in log.read_text()
