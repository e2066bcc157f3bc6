"""The upstream keep-alive pool against raw loopback servers: framing, reuse only after a complete response,
stale connections, interim responses, chunked uploads, backpressure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.config import Backend, Timeouts
from gateway.errors import UpstreamBodyError, UpstreamProtocolError, UpstreamTimeout
from gateway.pool import Pool

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
