"""The upstream keep-alive pool against raw loopback servers: framing, reuse only after a complete response,
stale connections, interim responses, chunked uploads, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.config.model import Backend, Timeouts
from gateway.errors import UpstreamBodyError, UpstreamProtocolError, UpstreamTimeout
from gateway.proxy.pool import Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server; yields its port and a list that grows by one per accepted connection."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()


def backend(port: int, response: float = 2.0, idle: float = 2.0) -> Backend:
    return Backend("b", f"http://127.0.0.1:{port}", "http", "127.0.0.1", port, "", Timeouts(1.0, response, idle),
                   8, None, 0, None)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            body = await reader.readexactly(int(line.split(b":")[1]))
        if line.lower() == b"transfer-encoding: chunked":
            while True:
                size = int((await reader.readline()).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
    return head, body


async def body_of(pool: Pool, method: str = "GET", target: str = "/", body: object = None) -> tuple[int, bytes]:
    resp = await pool.request(method, target, [("Host", "h")], body)  # type: ignore[arg-type]
    try:
        data, _ = await resp.read(10**9)
        return resp.status, data
    finally:
        resp.release()


async def keep_alive_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        _head, body = await read_request(reader)
        payload = b"ok:" + body
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(payload), payload))
        await writer.drain()


async def test_connections_are_reused_after_complete_responses() -> None:
    async with raw_server(keep_alive_server) as (port, accepted):
        pool = Pool(backend(port))
        for i in range(5):
            assert await body_of(pool, "POST", "/x", str(i).encode()) == (200, b"ok:" + str(i).encode())
        assert len(accepted) == 1
        pool.close()


async def test_an_unread_response_is_never_reused() -> None:
    async with raw_server(keep_alive_server) as (port, accepted):
        pool = Pool(backend(port))
        resp = await pool.request("GET", "/", [("Host", "h")], None)
        resp.release()                       # body not consumed: the connection is closed, not pooled
        assert await body_of(pool) == (200, b"ok:")
        assert len(accepted) == 2
        pool.close()


async def test_close_delimited_body_ends_at_eof_and_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async with raw_server(handler) as (port, accepted):
        pool = Pool(backend(port))
        assert await body_of(pool) == (200, b"until the end")
        assert await body_of(pool) == (200, b"until the end")
        assert len(accepted) == 2
        pool.close()


async def test_chunked_upload_of_a_stream() -> None:
    async def stream() -> AsyncIterator[bytes]:
        for part in (b"a" * 10, b"", b"b" * 70_000, b"c"):
            yield part

    async with raw_server(keep_alive_server) as (port, _):
        pool = Pool(backend(port))
        status, data = await body_of(pool, "POST", "/up", stream())
        assert status == 200 and data == b"ok:" + b"a" * 10 + b"b" * 70_000 + b"c"
        pool.close()


async def test_interim_100_continue_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        assert await body_of(pool) == (201, b"done")
        pool.close()


async def test_stale_keep_alive_connection_is_replaced_transparently() -> None:
    async def closes_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)   # then closes without saying so (no Connection: close)

    async with raw_server(closes_after_one) as (port, accepted):
        pool = Pool(backend(port))
        assert await body_of(pool) == (200, b"ok")
        await asyncio.sleep(0.2)
        assert await body_of(pool) == (200, b"ok")
        assert len(accepted) == 2
        pool.close()


async def test_head_response_has_no_body_even_with_content_length() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        resp = await pool.request("HEAD", "/", [("Host", "h")], None)
        assert resp.status == 200 and (b"Content-Length", b"1000") in resp.raw_headers
        assert await resp.read(100) == (b"", False)
        resp.release()
        pool.close()


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"])
async def test_truncated_bodies_raise(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        resp = await pool.request("GET", "/", [("Host", "h")], None)
        with pytest.raises(UpstreamBodyError):
            await resp.read(10**6)
        resp.release()
        pool.close()


async def test_silence_before_headers_is_a_timeout_and_garbage_a_protocol_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with raw_server(silent) as (port, _):
        pool = Pool(backend(port, response=0.3))
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", "/", [("Host", "h")], None)
        pool.close()
    async with raw_server(garbage) as (port, _):
        pool = Pool(backend(port))
        with pytest.raises(UpstreamProtocolError):
            await pool.request("GET", "/", [("Host", "h")], None)
        pool.close()


async def test_pool_limit_queues_and_hands_connections_over() -> None:
    async with raw_server(keep_alive_server) as (port, accepted):
        pool = Pool(backend(port), limit=2)
        results = await asyncio.gather(*(body_of(pool, "POST", "/", str(i).encode()) for i in range(20)))
        assert [r[1] for r in results] == [b"ok:" + str(i).encode() for i in range(20)]
        assert len(accepted) == 2
        assert pool.open == 2
        pool.close()


async def test_backpressure_pauses_reading_a_large_body() -> None:
    size = 8 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    async with raw_server(big) as (port, _):
        pool = Pool(backend(port))
        resp = await pool.request("GET", "/", [("Host", "h")], None)
        await asyncio.sleep(0.3)              # a slow consumer: the pool must not buffer the whole body
        assert resp._buffered < 2 * 1024 * 1024
        total = 0
        async for chunk in resp.chunks():
            total += len(chunk)
        assert total == size
        resp.release()
        pool.close()


async def test_bytes_after_the_response_never_reach_the_client_nor_the_next_request() -> None:
    async def over_sends(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                     b"HTTP/1.1 200 OK\r\nSet-Cookie: session=attacker\r\nContent-Length: 6\r\n\r\nsmugd!")
        await writer.drain()
        await reader.read()

    async with raw_server(over_sends) as (port, accepted):
        pool = Pool(backend(port))
        resp = await pool.request("GET", "/", [("Host", "h")], None)
        assert resp.status == 200
        assert resp.raw_headers == [(b"Content-Length", b"5")]
        assert await resp.read(100) == (b"hello", False)
        resp.release()
        assert await body_of(pool) == (200, b"hello")   # a fresh connection: the rest was never read as a reply
        assert len(accepted) == 2
        pool.close()


async def test_a_body_arriving_after_its_head_is_relayed_whole_and_the_connection_reused() -> None:
    # Body bytes in reads of their own bypass the parser: the parts must add up, and the next response on the
    # connection must still parse.
    async def in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for part in (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel", b"lo ", b"world"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.02)

    async with raw_server(in_pieces) as (port, accepted):
        pool = Pool(backend(port))
        assert await body_of(pool) == (200, b"hello world")
        assert await body_of(pool) == (200, b"hello world")
        assert len(accepted) == 1
        pool.close()


async def test_bytes_past_the_content_length_in_a_later_read_close_the_connection() -> None:
    async def over_sends_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"helloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmugd!")
        await writer.drain()
        await reader.read()

    async with raw_server(over_sends_later) as (port, accepted):
        pool = Pool(backend(port))
        assert await body_of(pool) == (200, b"hello")
        assert await body_of(pool) == (200, b"hello")   # a fresh connection: the rest was never read as a reply
        assert len(accepted) == 2
        pool.close()


async def test_non_idempotent_requests_are_never_replayed_on_a_fresh_connection() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        seen.append(head.split(b" ", 2)[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            head, _ = await read_request(reader)       # reads the next request, then hangs up without an answer
            seen.append(head.split(b" ", 2)[1])

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        assert await body_of(pool, "GET", "/warm") == (200, b"ok")
        with pytest.raises(UpstreamProtocolError):
            await body_of(pool, "POST", "/orders", b"")
        assert seen.count(b"/orders") == 1
        pool.close()


async def test_a_backend_that_stops_reading_an_upload_times_out() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536

    async with raw_server(never_reads) as (port, _):
        pool = Pool(backend(port, idle=0.5))
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(pool.request("POST", "/up", [("Host", "h")], endless()), 5)
        pool.close()


async def test_endless_response_headers_are_an_error_not_memory() -> None:
    async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(5000):
            writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            await writer.drain()

    async with raw_server(endless_headers) as (port, _):
        pool = Pool(backend(port))
        with pytest.raises(UpstreamProtocolError):
            await pool.request("GET", "/", [("Host", "h")], None)
        pool.close()


@pytest.mark.parametrize("answer", [b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
                                    b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"])
async def test_invalid_status_codes_are_refused(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        with pytest.raises(UpstreamProtocolError):
            await pool.request("GET", "/", [("Host", "h")], None)
        pool.close()


async def test_trailers_are_not_merged_into_the_headers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (port, _):
        pool = Pool(backend(port))
        resp = await pool.request("GET", "/", [("Host", "h")], None)
        assert await resp.read(100) == (b"hello", False)
        assert (b"X-T", b"1") not in resp.raw_headers
        resp.release()
        pool.close()


def test_a_request_head_renders_shared_fields_once_and_adds_what_each_request_needs() -> None:
    """Fields shared by requests (a keep-alive client's repeated ones) are rendered once; the per-request field,
    the default Host and the body's framing still come with each head."""
    from gateway.proxy.headers import Fields
    from gateway.proxy.pool import _request_head

    b = backend(8080)
    shared = Fields([("Accept", "*/*"), ("X-Forwarded-For", "10.0.0.1")])
    first = _request_head("GET", "/a?x=1", shared, b, None, ("traceparent", "00-aa-bb-00"))
    assert first == (b"GET /a?x=1 HTTP/1.1\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n"
                     b"Host: 127.0.0.1:8080\r\ntraceparent: 00-aa-bb-00\r\n\r\n")
    assert shared.rendered is not None
    rendered = shared.rendered
    second = _request_head("POST", "/b", shared, b, b"12345", ("traceparent", "00-cc-dd-00"))
    assert shared.rendered is rendered   # not rendered again
    assert second == (b"POST /b HTTP/1.1\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nHost: 127.0.0.1:8080\r\n"
                      b"traceparent: 00-cc-dd-00\r\nContent-Length: 5\r\n\r\n")
    hosted = Fields([("Host", "shop.example"), ("Content-Length", "3")])
    assert _request_head("PUT", "/c", hosted, b, b"abc") == \
        b"PUT /c HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 3\r\n\r\n"
    # A plain list (a copy someone added to) is rendered as it is each time.
    assert _request_head("GET", "/d", [("Host", "h")], b, None) == b"GET /d HTTP/1.1\r\nHost: h\r\n\r\n"
