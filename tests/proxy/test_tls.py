"""TLS to backends, against real HTTPS servers on loopback with certificates made at run time: verification and
what a failed handshake looks like, mutual TLS, session resumption and keep-alive, the circuit, shadow and
WebSocket relays over TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import (
    Certs,
    admin_url,
    public_url,
    refusing_server,
    run_gateway,
    serve_app,
    write_pair,
    write_routes,
)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "certs")


def echo_app(name: str = "secure") -> tuple[web.Application, list[object]]:
    """A backend that names itself, echoes X-Forwarded-Proto, and records the connection of each request."""
    connections: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        connections.append(request.transport)
        body = await request.read()
        return web.Response(text=f"{name}:{len(body)}", headers={
            "X-Served-By": name, "X-Seen-Proto": request.headers.get("X-Forwarded-Proto", "")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, connections


def routes(url: str, tls: str = "", extra: str = "") -> str:
    return f"""\
backends:
  secure: {{url: "{url}"{', tls: {' + tls + '}' if tls else ''}{extra}}}
fallback: secure
"""


async def fetch(url: str, **kw: object) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_trusted_backend_answers_over_tls_with_keep_alive(tmp_path: Path, certs: Certs) -> None:
    app, connections = echo_app()
    async with serve_app(app, ssl_context=certs.server_context()) as url:
        assert url.startswith("https://")
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            for _ in range(5):
                async with s.get(public_url(gw) + "/x") as resp:
                    assert resp.status == 200
                    assert await resp.text() == "secure:0"
                    assert resp.headers["X-Seen-Proto"] == "http"
            tls = gw.upstreams.tls(gw.table.config.backends["secure"])
            assert tls is not None and tls.handshakes == 1   # five requests, one connection, one handshake
    assert len(set(map(id, connections))) == 1


async def test_large_bodies_stream_both_ways_over_tls(tmp_path: Path, certs: Certs) -> None:
    # A chunked upload goes out as separate framing and data writes, and a long Content-Length body bypasses
    # the response parser: both must hold over asyncio's TLS transport too.
    big = bytes(range(256)) * 12288   # 3 MiB

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            size = 0
            async for part in request.content.iter_any():
                size += len(part)
            return web.Response(text=str(size))
        return web.Response(body=big)

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(48):
            yield big[:65536]

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app, ssl_context=certs.server_context()) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.post(public_url(gw) + "/up", data=upload()) as resp:
                assert (resp.status, await resp.text()) == (200, str(48 * 65536))
            async with s.get(public_url(gw) + "/down") as resp:
                assert resp.status == 200 and await resp.read() == big


async def test_sessions_are_resumed_on_the_next_pooled_connections(tmp_path: Path, certs: Certs) -> None:
    app, _ = echo_app()

    async def closing(request: web.Request) -> web.Response:   # every answer closes its connection
        resp = web.Response(text="bye")
        resp.force_close()
        return resp

    app.router.add_get("/close", closing)
    async with serve_app(app, ssl_context=certs.server_context()) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            for _ in range(4):
                async with s.get(public_url(gw) + "/close") as resp:
                    assert resp.status == 200
            tls = gw.upstreams.tls(gw.table.config.backends["secure"])
            assert tls is not None
            assert tls.handshakes == 4
            assert tls.resumed == 3   # the first handshake is full, each later one resumes the last session
            _, _, metrics = await fetch(admin_url(gw) + "/metrics")
    assert b'strangler_backend_tls_handshakes_total{backend="secure",resumed="true"} 3.0' in metrics
    assert b'strangler_backend_tls_handshakes_total{backend="secure",resumed="false"} 1.0' in metrics


@pytest.mark.parametrize("case, cause", [
    ("untrusted", "unknown CA"),
    ("mismatch", "name mismatch"),
    ("expired", "certificate expired"),
])
async def test_a_backend_that_cannot_be_verified_gets_502_naming_the_cause(
        tmp_path: Path, certs: Certs, caplog: pytest.LogCaptureFixture, case: str, cause: str) -> None:
    app, connections = echo_app()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    ctx = {"untrusted": lambda: certs.server_context(ca=certs.other_ca),
           "mismatch": lambda: certs.server_context("other.example"),
           "expired": lambda: certs.server_context(not_after=past)}[case]()
    caplog.set_level(logging.INFO, logger="strangler.tls")
    async with serve_app(app, ssl_context=ctx) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw:
            for _ in range(3):
                status, headers, body = await fetch(public_url(gw) + "/x")
                assert status == 502
                assert headers["Content-Type"] == "application/problem+json"
                problem = json.loads(body)
                assert problem["type"] == "urn:strangler:problem:backend-tls"
                assert problem["tls_cause"] == cause
                assert cause in problem["detail"]
            _, _, metrics = await fetch(admin_url(gw) + "/metrics")
    assert f'strangler_backend_tls_failures_total{{backend="secure",cause="{cause}"}} 3.0'.encode() in metrics
    assert connections == []   # never spoken to
    logged = [r for r in caplog.records if getattr(r, "event", "") == "backend_tls_failed"]
    assert len(logged) == 1    # three failed requests, one log line


async def test_the_system_cas_are_the_default_and_a_private_ca_is_not_among_them(tmp_path: Path,
                                                                                 certs: Certs) -> None:
    app, _ = echo_app()
    async with serve_app(app, ssl_context=certs.server_context()) as url:
        path = write_routes(tmp_path, routes(url))   # no tls block: verified against the system CAs
        async with run_gateway(path) as gw:
            status, _, body = await fetch(public_url(gw) + "/x")
    assert status == 502 and b"unknown CA" in body


async def test_server_name_sets_the_name_verified(tmp_path: Path, certs: Certs) -> None:
    app, _ = echo_app()
    async with serve_app(app, ssl_context=certs.server_context("payments.internal")) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}, server_name: payments.internal"))
        async with run_gateway(path) as gw:
            status, _, body = await fetch(public_url(gw) + "/x")
    assert (status, body) == (200, b"secure:0")


async def test_mutual_tls_works_with_the_client_certificate_and_fails_without(tmp_path: Path,
                                                                              certs: Certs) -> None:
    client_ca = certs.other_ca
    cert, key, _ = certs.leaf("gw", "gateway.internal", ca=client_ca)
    app, _ = echo_app()
    async with serve_app(app, ssl_context=certs.server_context(client_ca=client_ca)) as url:
        with_cert = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}, cert: {cert}, key: {key}"),
                                 name="mtls.yaml")
        async with run_gateway(with_cert) as gw:
            status, _, body = await fetch(public_url(gw) + "/x")
            assert (status, body) == (200, b"secure:0")
    with refusing_server(certs.server_context(client_ca=client_ca)) as port:
        without = write_routes(tmp_path, routes(f"https://127.0.0.1:{port}", f"ca: {certs.ca_file}"),
                               name="plain.yaml")
        async with run_gateway(without) as gw:
            status, _, body = await fetch(public_url(gw) + "/x")
            problem = json.loads(body)
            assert status == 502, problem
            assert problem.get("tls_cause") == "client certificate refused", problem
            assert problem["tls_cause"] == "client certificate refused"


async def test_tls_failures_count_against_the_circuit(tmp_path: Path, certs: Certs) -> None:
    app, _ = echo_app()
    async with serve_app(app, ssl_context=certs.server_context(ca=certs.other_ca)) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}",
                                             ", circuit: {failures: 2, cooldown: 30s}"))
        async with run_gateway(path) as gw:
            statuses = [(await fetch(public_url(gw) + "/x"))[0] for _ in range(3)]
    assert statuses == [502, 502, 503]


async def test_a_plain_http_server_on_an_https_url_is_not_tls(tmp_path: Path, certs: Certs) -> None:
    app, _ = echo_app()
    async with serve_app(app) as url:
        path = write_routes(tmp_path, routes(url.replace("http://", "https://"), f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw:
            status, _, body = await fetch(public_url(gw) + "/x")
    assert status == 502 and b'"tls_cause": "not TLS"' in body


async def test_shadow_copies_go_to_an_https_backend(tmp_path: Path, certs: Certs) -> None:
    legacy_app, _ = echo_app("legacy")
    new_app, new_connections = echo_app("new")
    async with serve_app(legacy_app) as legacy, \
            serve_app(new_app, ssl_context=certs.server_context()) as new:
        path = write_routes(tmp_path, f"""\
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}", tls: {{ca: {certs.ca_file}}}}}
fallback: legacy
routes:
  - name: r
    match: {{path: {{prefix: /r}}}}
    to: new
    stage: shadow
""")
        async with run_gateway(path) as gw:
            status, headers, _ = await fetch(public_url(gw) + "/r/1")
            assert (status, headers["X-Served-By"]) == (200, "legacy")
            for _ in range(200):   # the copy is sent in the background
                if new_connections:
                    break
                await asyncio.sleep(0.02)
    assert len(new_connections) == 1


async def test_websocket_relay_to_an_https_backend(tmp_path: Path, certs: Certs) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("tls:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    async with serve_app(app, ssl_context=certs.server_context("ws.internal")) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}, server_name: ws.internal"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s, \
                s.ws_connect(public_url(gw) + "/ws") as ws:
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "tls:hi"
            await ws.close()


async def test_websocket_to_an_untrusted_backend_is_a_tls_502(tmp_path: Path, certs: Certs) -> None:
    async def never(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/ws", never)
    async with serve_app(app, ssl_context=certs.server_context(ca=certs.other_ca)) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}"))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await s.ws_connect(public_url(gw) + "/ws")
    assert err.value.status == 502


async def test_a_renewed_client_certificate_is_used_for_new_connections(tmp_path: Path, certs: Certs) -> None:
    client_ca = certs.other_ca
    cert, key, _ = certs.leaf("gw", "gateway-v1.internal", ca=client_ca)

    async def who(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        names = sorted(v for _k, v in (peer or {}).get("subjectAltName", ()))
        resp = web.Response(text=",".join(names))
        resp.force_close()   # a new connection (and handshake) for every request
        return resp

    app = web.Application()
    app.router.add_get("/who", who)
    async with serve_app(app, ssl_context=certs.server_context(client_ca=client_ca)) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}, cert: {cert}, key: {key}"))
        async with run_gateway(path) as gw:
            status, _, body = await fetch(public_url(gw) + "/who")
            assert (status, body) == (200, b"gateway-v1.internal")
            write_pair(client_ca.issue_cert("gateway-v2.internal"), cert, key)
            seen = body
            for _ in range(100):   # the files are looked at again at most once a second
                status, _, seen = await fetch(public_url(gw) + "/who")
                assert status == 200
                if seen == b"gateway-v2.internal":
                    break
                await asyncio.sleep(0.05)
            assert seen == b"gateway-v2.internal"


async def test_websocket_relays_use_a_renewed_client_certificate(tmp_path: Path, certs: Certs) -> None:
    client_ca = certs.other_ca
    cert, key, _ = certs.leaf("gw", "gateway-v1.internal", ca=client_ca)

    async def who(request: web.Request) -> web.WebSocketResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(",".join(sorted(v for _k, v in (peer or {}).get("subjectAltName", ()))))
        await ws.close()
        return ws

    async def names(url: str) -> str:
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            return (await ws.receive(timeout=5)).data

    app = web.Application()
    app.router.add_get("/ws", who)
    async with serve_app(app, ssl_context=certs.server_context(client_ca=client_ca)) as url:
        path = write_routes(tmp_path, routes(url, f"ca: {certs.ca_file}, cert: {cert}, key: {key}"))
        async with run_gateway(path) as gw:
            assert await names(public_url(gw) + "/ws") == "gateway-v1.internal"
            write_pair(client_ca.issue_cert("gateway-v2.internal"), cert, key)
            seen = ""
            for _ in range(100):   # the files are looked at again at most once a second
                seen = await names(public_url(gw) + "/ws")
                if seen == "gateway-v2.internal":
                    break
                await asyncio.sleep(0.05)
            assert seen == "gateway-v2.internal"


async def test_on_error_fallback_serves_legacy_when_the_new_side_fails_tls(tmp_path: Path, certs: Certs) -> None:
    legacy_app, _ = echo_app("legacy")
    new_app, new_connections = echo_app("new")
    async with serve_app(legacy_app) as legacy, \
            serve_app(new_app, ssl_context=certs.server_context(ca=certs.other_ca)) as new:
        path = write_routes(tmp_path, f"""\
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}", tls: {{ca: {certs.ca_file}}}}}
fallback: legacy
routes:
  - name: r
    match: {{path: {{prefix: /r}}}}
    to: new
    stage: extracted
    on_error: fallback
""")
        async with run_gateway(path) as gw:
            status, headers, _ = await fetch(public_url(gw) + "/r/1")
    assert (status, headers["X-Served-By"]) == (200, "legacy")
    assert new_connections == []
