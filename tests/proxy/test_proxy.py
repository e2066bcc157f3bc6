"""The streaming reverse proxy against real loopback upstreams: headers, raw targets, streaming both ways, error
mapping, truncation, cancellation, WebSocket passthrough."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support import public_url, refused_port, run_gateway, serve_app, write_routes


def echo_app(seen: list[dict]) -> web.Application:
    """Answers with what it received: method, raw path, headers (as a list, to see duplicates), body size."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append({"method": request.method, "raw_path": request.raw_path,
                     "headers": [[k, v] for k, v in request.headers.items()], "body": body})
        return web.json_response({"method": request.method, "raw_path": request.raw_path, "size": len(body),
                                  "headers": [[k, v] for k, v in request.headers.items()]},
                                 headers={"X-Served-By": "echo"})

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@contextlib.asynccontextmanager
async def gateway_for(tmp_path: Path, backend_url: str, extra: str = "") -> AsyncIterator[str]:
    path = write_routes(tmp_path, f"""\
        backends:
          legacy: {{url: "{backend_url}", timeouts: {{connect: 1s, response: 1s, idle: 1s}}}}
        fallback: legacy
        {extra}
        """)
    async with run_gateway(path) as gw:
        yield public_url(gw)


def header_values(headers: list[list[str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


async def test_forwarding_headers_and_hop_by_hop(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        async with aiohttp.ClientSession() as s:
            headers = {"Host": "shop.example", "X-Forwarded-For": "10.9.8.7", "Connection": "keep-alive, X-Private",
                       "X-Private": "secret", "Keep-Alive": "timeout=5", "TE": "trailers", "X-Shadow": "1",
                       "X-Forwarded-Proto": "https", "Proxy-Authorization": "Basic x", "X-Custom": "kept"}
            async with s.get(gw + "/api/x", headers=headers) as resp:
                assert resp.status == 200
                got = (await resp.json())["headers"]
    assert header_values(got, "Host") == ["shop.example"]
    assert header_values(got, "X-Forwarded-For") == ["10.9.8.7, 127.0.0.1"]
    assert header_values(got, "X-Forwarded-Proto") == ["http"]
    assert header_values(got, "X-Forwarded-Host") == ["shop.example"]
    assert header_values(got, "X-Custom") == ["kept"]
    for gone in ("X-Private", "Keep-Alive", "TE", "X-Shadow", "Proxy-Authorization"):
        assert header_values(got, gone) == [], gone
    assert any("strangler" in v for v in header_values(got, "Via"))


async def test_response_hop_by_hop_stripped_and_duplicates_kept(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        resp = web.Response(text="ok", headers={"Connection": "X-Internal", "X-Internal": "1"})
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.get(gw + "/") as resp:
            assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
            assert "X-Internal" not in resp.headers
            assert await resp.text() == "ok"


async def test_raw_path_and_query_forwarded_byte_for_byte(tmp_path: Path) -> None:
    seen: list[dict] = []
    target = "/api/a%20b/c%C3%A9?x=%2F&y=1+2&z=%zz&&empty="
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        answer = await raw_request(gw, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # The raw target on the wire is exactly what the client sent (no decoding, no re-encoding).
    assert seen[0]["raw_path"] == "/api/a%20b/c%C3%A9?x=%2F&y=1+2&z=%zz&&empty="


async def raw_request(url: str, request: bytes, read_timeout: float = 5.0) -> bytes:
    """Send bytes exactly as given (no client-side normalisation) and read the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


async def test_dot_segments_are_normalised_before_matching(tmp_path: Path) -> None:
    legacy_seen: list[dict] = []
    new_seen: list[dict] = []
    async with serve_app(echo_app(legacy_seen)) as legacy, serve_app(echo_app(new_seen)) as new:
        extra = f"""\
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}"}}
fallback: legacy
routes:
  - name: admin
    match: {{path: {{prefix: /admin}}}}
    to: new
    stage: extracted
"""
        path = write_routes(tmp_path, extra)
        async with run_gateway(path) as gw:
            url = public_url(gw)
            for spelling in ("/public/../admin/x", "/admin//x", "/%61dmin/x", "/public/%2e%2e/admin/x",
                             "/./admin/x"):
                answer = await raw_request(url, f"GET {spelling} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                                           .encode())
                assert answer.startswith(b"HTTP/1.1 200"), (spelling, answer[:200])
                assert b"X-Served-By: echo" in answer
            assert [s["raw_path"] for s in new_seen] == ["/admin/x"] * 5
            assert legacy_seen == []


@pytest.mark.parametrize("target", ["/admin%2Fx", "/a/%5C..%5Cadmin", "/a\\b", "/a/%00"])
async def test_ambiguous_paths_are_refused_with_problem_json(tmp_path: Path, target: str) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        answer = await raw_request(gw, f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 400
    assert seen == []


async def test_response_streams_before_upstream_finishes(tmp_path: Path) -> None:
    go = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first-chunk;")
        await asyncio.wait_for(go.wait(), 5)   # only continues once the client has seen the first chunk
        await resp.write(b"second-chunk")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/stream", handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.get(gw + "/stream") as resp:
            first = await asyncio.wait_for(resp.content.readexactly(len(b"first-chunk;")), 3)
            assert first == b"first-chunk;"
            go.set()
            assert await resp.content.read() == b"second-chunk"


async def test_request_body_streams_before_client_finishes(tmp_path: Path) -> None:
    got_first = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        first = await request.content.readexactly(5)
        got_first.set()
        rest = await request.content.read()
        return web.json_response({"first": first.decode(), "rest": len(rest)})

    async def body() -> AsyncIterator[bytes]:
        yield b"hello"
        await asyncio.wait_for(got_first.wait(), 3)   # the upstream must see bytes before the upload ends
        yield b"x" * 100_000

    app = web.Application()
    app.router.add_post("/upload", handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.post(gw + "/upload", data=body()) as resp:
            assert resp.status == 200
            assert await resp.json() == {"first": "hello", "rest": 100_000}


async def test_content_length_upload_keeps_length(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.put(gw + "/data", data=b"z" * 300_000) as resp:
            assert (await resp.json())["size"] == 300_000
    assert header_values(seen[0]["headers"], "Content-Length") == ["300000"]
    assert header_values(seen[0]["headers"], "Transfer-Encoding") == []


async def test_no_decompression_no_redirects_no_cookie_jar(tmp_path: Path) -> None:
    payload = gzip.compress(b'{"a": 1}' * 100)

    async def gz(request: web.Request) -> web.Response:
        return web.Response(body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/elsewhere", "Set-Cookie": "sid=abc; Path=/"})

    async def cookies(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", "none"))

    app = web.Application()
    app.router.add_get("/gz", gz)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/cookies", cookies)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw:
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.get(gw + "/gz") as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                assert await resp.read() == payload
            async with s.get(gw + "/redirect", allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"] == "/elsewhere"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            async with s.get(gw + "/cookies") as resp:
                # The gateway kept no cookie from the redirect's Set-Cookie for another client.
                assert await resp.text() == "none"


async def test_head_204_304_have_no_body(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "204":
            return web.Response(status=204)
        if kind == "304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(body=b"x" * 1234)

    app = web.Application()
    app.router.add_route("*", "/{kind}", handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw:
        for target, method, status in (("/204", "GET", 204), ("/304", "GET", 304), ("/full", "HEAD", 200)):
            answer = await raw_request(gw, f"{method} {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                                       .encode())
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
            assert body == b"", (target, body[:50])
            if method == "HEAD":
                assert b"Content-Length: 1234" in head


async def test_refused_backend_is_a_fast_502(tmp_path: Path) -> None:
    async with gateway_for(tmp_path, f"http://127.0.0.1:{refused_port()}") as gw, aiohttp.ClientSession() as s:
        started = time.perf_counter()
        async with s.get(gw + "/anything") as resp:
            elapsed = time.perf_counter() - started
            assert resp.status == 502
            assert resp.content_type == "application/problem+json"
            problem = await resp.json()
    assert problem["status"] == 502 and problem["backend"] == "legacy"
    assert elapsed < 1.0


async def test_hung_backend_is_a_504_at_the_response_timeout(tmp_path: Path) -> None:
    async def accept_and_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()   # never answers; returns when the gateway gives up
        writer.close()

    server = await asyncio.start_server(accept_and_hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with gateway_for(tmp_path, f"http://127.0.0.1:{port}") as gw, aiohttp.ClientSession() as s:
            started = time.perf_counter()
            async with s.get(gw + "/slow") as resp:
                elapsed = time.perf_counter() - started
                assert resp.status == 504
                assert (await resp.json())["status"] == 504
        assert 0.9 <= elapsed < 3.0   # response timeout configured as 1s
    finally:
        server.close()


async def _broken_server(response: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + b"b" * 100 + b"\r\n",
], ids=["content-length", "chunked"])
async def test_truncated_upstream_body_aborts_the_client_connection(tmp_path: Path, response: bytes) -> None:
    server, port = await _broken_server(response)
    try:
        async with gateway_for(tmp_path, f"http://127.0.0.1:{port}") as gw, aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(gw + "/cut") as resp:
                    assert resp.status == 200
                    await resp.read()
    finally:
        server.close()


async def test_garbage_from_backend_is_a_502(tmp_path: Path) -> None:
    server, port = await _broken_server(b"this is not http\r\n\r\n")
    try:
        async with gateway_for(tmp_path, f"http://127.0.0.1:{port}") as gw, aiohttp.ClientSession() as s:
            async with s.get(gw + "/garbage") as resp:
                assert resp.status == 502
                assert resp.content_type == "application/problem+json"
    finally:
        server.close()


async def test_client_going_away_cancels_the_upstream_request(tmp_path: Path) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    async with serve_app(app, handler_cancellation=True) as up, gateway_for(tmp_path, up) as gw:
        host, port = gw.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(started.wait(), 3)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 3)


async def test_upstream_errors_pass_through_unchanged(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="legacy is busy", headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_get("/busy", handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.get(gw + "/busy") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "7"
            assert await resp.text() == "legacy is busy"


async def test_websocket_passthrough(tmp_path: Path) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["chat.v1"])
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    async with serve_app(app) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async with s.ws_connect(gw + "/ws", protocols=["chat.v1"]) as ws:
            assert ws.protocol == "chat.v1"
            await ws.send_str("hi")
            assert (await ws.receive(timeout=3)).data == "echo:hi"
            await ws.send_bytes(b"abc")
            assert (await ws.receive(timeout=3)).data == b"cba"
            await ws.close()


async def test_many_concurrent_requests_reuse_connections(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw, aiohttp.ClientSession() as s:
        async def one(i: int) -> int:
            async with s.post(gw + f"/n/{i}", data=str(i).encode()) as resp:
                data = await resp.json()
                assert data["raw_path"] == f"/n/{i}"
                return data["size"]

        sizes = await asyncio.gather(*(one(i) for i in range(200)))
    assert sizes == [len(str(i)) for i in range(200)]


async def test_request_body_limit_gives_413(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            limits: {{max_request_body: 1KiB}}
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.post(public_url(gw) + "/big", data=b"x" * 2048) as resp:
                assert resp.status == 413
                assert resp.content_type == "application/problem+json"
            async with s.post(public_url(gw) + "/small", data=b"x" * 100) as resp:
                assert resp.status == 200
    assert [s["raw_path"] for s in seen] == ["/small"]


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\nBad Header\r\n\r\n", 400),
    (b"NOT-HTTP\r\n\r\n", 400),
], ids=["long-target", "long-header", "bad-header", "garbage"])
async def test_unparseable_requests_get_problem_json(tmp_path: Path, request_bytes: bytes, status: int) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        answer = await raw_request(gw, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    # aiohttp answers an unparseable request as HTTP/1.0: it cannot know the version the client speaks.
    assert head.split(b" ")[1] == str(status).encode(), answer[:200]
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == status
    assert seen == []


async def test_expect_100_continue_is_answered_by_the_gateway(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        host, port = gw.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)   # before any body byte is sent
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert seen[0]["body"] == b"hello"
    assert header_values(seen[0]["headers"], "Expect") == []


async def test_forwarded_and_underscore_spellings_of_control_headers_are_dropped(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        answer = await raw_request(gw, b"GET /x HTTP/1.1\r\nHost: h\r\nForwarded: for=1.2.3.4;proto=https\r\n"
                                       b"X_Shadow: 1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    names = {k.lower() for k, _ in seen[0]["headers"]}
    assert "forwarded" not in names and "x_shadow" not in names and "x-shadow" not in names


async def test_a_client_that_stalls_its_upload_releases_the_backend(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:   # idle timeout 1s
        host, port = gw.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)     # the gateway gives up on the client
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"Connection: close" in head
    assert seen == []


async def test_a_request_head_dripping_in_is_cut_off_after_client_idle(tmp_path: Path) -> None:
    seen: list[dict] = []
    async with serve_app(echo_app(seen)) as up:
        path = write_routes(tmp_path, f"""\
            backends: {{legacy: {{url: "{up}"}}}}
            fallback: legacy
            limits: {{client_idle: 1s}}
            """)
        async with run_gateway(path) as gw:
            host, port = gw.bound["public"]
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
            started = time.monotonic()
            closed_after = None
            for i in range(40):                        # one header line every 0.1 s, never the blank line
                await asyncio.sleep(0.1)
                try:
                    writer.write(b"X-Drip: %d\r\n" % i)
                    await writer.drain()
                except ConnectionError:
                    closed_after = time.monotonic() - started
                    break
                if reader.at_eof():
                    closed_after = time.monotonic() - started
                    break
            writer.close()
    assert closed_after is not None and closed_after < 3.0
    assert seen == []


async def test_a_keep_alive_connection_repeating_or_changing_its_fields_is_rewritten_each_time(tmp_path: Path
                                                                                               ) -> None:
    """The rewrite of a connection's repeated field block is reused (server.handler): a repeat must forward what a
    fresh rewrite would, and a changed block (a field named by Connection, a forged control header) must not get
    the previous request's rewrite."""
    seen: list[dict] = []
    plain = "Host: shop.example\r\nX-Forwarded-For: 10.9.8.7\r\nX-Custom: kept\r\n"
    changed = ("Host: shop.example\r\nX-Forwarded-For: 10.9.8.7\r\nConnection: X-Custom\r\nX-Custom: kept\r\n"
               "X-Shadow: 1\r\nVia: 1.1 edge\r\n")
    blocks = [plain, plain, changed, plain]
    async with serve_app(echo_app(seen)) as up, gateway_for(tmp_path, up) as gw:
        host, port = gw.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        got = []
        try:
            for i, block in enumerate(blocks):
                writer.write(f"GET /api/{i} HTTP/1.1\r\n{block}\r\n".encode())
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                got.append(json.loads(await asyncio.wait_for(reader.readexactly(length), 5))["headers"])
        finally:
            writer.close()
    for i in (0, 1, 3):
        assert header_values(got[i], "X-Custom") == ["kept"]
        assert header_values(got[i], "Via") == ["1.1 strangler"]
    assert header_values(got[2], "X-Custom") == [] and header_values(got[2], "X-Shadow") == []
    assert header_values(got[2], "Via") == ["1.1 edge, 1.1 strangler"]
    for headers in got:
        assert header_values(headers, "X-Forwarded-For") == ["10.9.8.7, 127.0.0.1"]
        assert header_values(headers, "Host") == ["shop.example"]
    # Each request still gets a traceparent of its own.
    assert len({header_values(headers, "traceparent")[0] for headers in got}) == len(blocks)
