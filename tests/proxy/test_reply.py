"""A complete small answer relayed in one write (gateway.proxy.reply), on the wire: the status line in the client's
HTTP version, keep-alive as aiohttp would say it, the backend's fields less hop-by-hop ones, Content-Length for a
chunked answer, Date added only when missing, and pipelined requests answered in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from tests.proxy.test_proxy import gateway_for
from tests.support import serve_app


def backend_app() -> web.Application:
    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"plain " + request.path.encode(), content_type="text/plain",
                            headers={"X-Served-By": "legacy", "Connection": "X-Private", "X-Private": "secret",
                                     "Keep-Alive": "timeout=5"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"in ")
        await resp.write(b"pieces")
        await resp.write_eof()
        return resp

    async def dated(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"dated", headers={"Date": "Tue, 01 Jan 2030 00:00:00 GMT"})

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/dated", dated)
    app.router.add_get("/{tail:.*}", plain)
    return app


async def exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` as it is and read until the gateway closes the connection (every exchange here ends with a
    request that asks it to)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def split(answer: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    line, *fields = head.split(b"\r\n")
    headers: dict[bytes, list[bytes]] = {}
    for field in fields:
        name, _, value = field.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return line, headers, body


async def test_a_relayed_answer_keeps_the_backend_fields_less_hop_by_hop_ones(tmp_path: Path) -> None:
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        line, headers, body = split(await exchange(gw, b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
    assert line == b"HTTP/1.1 200 OK"
    assert body == b"plain /a"
    assert headers[b"content-length"] == [b"8"]
    assert headers[b"x-served-by"] == [b"legacy"]
    assert headers[b"content-type"] == [b"text/plain"]
    # Hop-by-hop fields and the one the backend's Connection named stay on the backend's connection.
    assert b"x-private" not in headers and b"keep-alive" not in headers
    # The client asked to close: said, and done (the read above ended because the gateway closed).
    assert headers[b"connection"] == [b"close"]
    assert len(headers[b"x-trace-id"][0]) == 32
    assert len(headers[b"date"]) == 1
    assert headers[b"server"][0].startswith(b"Python/")   # the backend's own, relayed; the gateway adds none


async def test_a_chunked_answer_arrives_whole_with_its_length(tmp_path: Path) -> None:
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        _, headers, body = split(await exchange(gw, b"GET /chunked HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
    assert body == b"in pieces"
    assert headers[b"content-length"] == [b"9"] and b"transfer-encoding" not in headers


async def test_the_backend_date_is_kept(tmp_path: Path) -> None:
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        _, headers, _ = split(await exchange(gw, b"GET /dated HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"))
    assert headers[b"date"] == [b"Tue, 01 Jan 2030 00:00:00 GMT"]


async def test_http_1_0_clients_get_their_version_and_keep_alive_only_when_asked(tmp_path: Path) -> None:
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        # Without keep-alive an HTTP/1.0 connection closes after the answer (the read ends), with no Connection.
        line, headers, body = split(await exchange(gw, b"GET /old HTTP/1.0\r\n\r\n"))
        assert line == b"HTTP/1.0 200 OK" and body == b"plain /old" and b"connection" not in headers
        # With it, the answer says keep-alive and the connection serves a second request.
        answer = await exchange(gw, b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                    b"GET /two HTTP/1.0\r\n\r\n")
    first, second = answer.split(b"HTTP/1.0 200 OK")[1:]
    assert b"Connection: keep-alive" in first and first.endswith(b"plain /one")
    assert second.endswith(b"plain /two")


async def test_pipelined_requests_are_answered_in_order_on_one_connection(tmp_path: Path) -> None:
    requests = b"".join(b"GET /p%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5))
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        answer = await exchange(gw, requests + b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [b.split(b"HTTP/")[0] for b in bodies] == [b"plain /p%d" % i for i in range(5)] + [b"plain /last"]


async def test_answers_alternating_on_one_backend_connection_each_keep_their_own_fields(tmp_path: Path) -> None:
    """A backend connection keeps the block it relayed last (forward._relayed_fields): answers with other fields,
    another length or another framing on the same connection must not get it."""
    paths = ["/dated", "/a", "/chunked", "/dated", "/abc", "/a"]
    requests = b"".join(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % p.encode() for p in paths)
    async with serve_app(backend_app()) as legacy, gateway_for(tmp_path, legacy) as gw:
        answer = await exchange(gw, requests + b"GET /end HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    parts = [split(b"HTTP/1.1 200 OK\r\n" + part) for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert len(parts) == len(paths) + 1
    for path, (_, headers, body) in zip(paths, parts, strict=False):
        expected = {"/dated": b"dated", "/chunked": b"in pieces"}.get(path, b"plain " + path.encode())
        assert body.startswith(expected), (path, body)
        assert headers[b"content-length"] == [b"%d" % len(expected)], path
        assert (headers[b"date"] == [b"Tue, 01 Jan 2030 00:00:00 GMT"]) == (path == "/dated"), path
        assert (headers.get(b"x-served-by") == [b"legacy"]) == path.startswith(("/a",)), path
        assert b"x-private" not in headers and b"transfer-encoding" not in headers
        assert len(headers[b"x-trace-id"]) == 1
    assert len({headers[b"x-trace-id"][0] for _, headers, _ in parts}) == len(parts)
