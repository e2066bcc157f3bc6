"""A lean HTTP/1.1 keep-alive connection pool to one backend, with httptools (llhttp, the C parser Node.js uses)
reading responses.

Why not aiohttp's client: a proxy needs a fraction of what a general client does (no cookies, redirects,
decompression, URL handling, default headers), and on a gateway that fraction is paid on every request. This
module does only the proxy's part: write the request head as given, stream the body, parse the response head, hand
the body over chunk by chunk with backpressure, and return the connection to the pool only after a complete
response that the backend agreed to keep alive.

    Pool.request(method, target, headers, body) -> UpstreamResponse   (raises GatewayError before the headers)
    UpstreamResponse.chunks() -> async iterator of bytes               (raises UpstreamBodyError if cut short)
    UpstreamResponse.release()                                         (back to the pool, or closed)

Framing follows RFC 9112 §6: a response to HEAD, and 1xx/204/304 responses, have no body; otherwise
Transfer-Encoding: chunked or Content-Length delimit it, and without either the body runs until the backend
closes the connection (never reused). A request body without Content-Length is sent chunked.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import httptools

from gateway.config.model import Backend
from gateway.errors import (
    GatewayError,
    UpstreamBodyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

MAX_HEADER_BYTES = 64 * 1024   # a backend's response head beyond this is an error, not memory to fill
MAX_HEADER_FIELDS = 200
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
TIMEOUT_TICK = 0.05          # seconds between two checks of the response deadlines
HIGH_WATER = 256 * 1024     # buffered response bytes before we stop reading from the backend
LOW_WATER = 64 * 1024
NO_BODY_STATUS = frozenset({204, 304})

Body = AsyncIterable[bytes] | bytes | None


class _Overrun(Exception):
    """Raised inside a parser callback to stop parsing what the backend should not have sent."""


class _Connection(asyncio.Protocol):
    """One TCP connection to the backend and the response currently being read on it."""

    __slots__ = ("pool", "transport", "parser", "response", "closed", "reusable", "idle_since", "write_paused",
                 "drain_waiter", "requests", "dirty", "counted_out", "overrun")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.requests = 0
        self.dirty = False        # the request body was not fully sent: the connection must never be reused
        self.counted_out = False  # the pool has stopped counting this connection
        self.overrun = False      # the backend sent more than its response: never reuse, never forward the rest

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:   # bytes while idle: the backend is confused; never reuse this connection
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except _Overrun:
            self._overrun(response)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Overrun) or self.overrun:
                self._overrun(response)
                return
            response._fail(UpstreamProtocolError(f"{self.pool.backend.name}: invalid response: {exc}",
                                                 backend=self.pool.backend.name))
            self.close()
        except httptools.HttpParserUpgrade:
            response._fail(UpstreamProtocolError(f"{self.pool.backend.name}: unexpected protocol upgrade",
                                                 backend=self.pool.backend.name))
            self.close()
        except httptools.HttpParserError as exc:
            response._fail(UpstreamProtocolError(f"{self.pool.backend.name}: invalid response: {exc}",
                                                 backend=self.pool.backend.name))
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_exception(ConnectionResetError("connection lost while sending"))
        response = self.response
        if response is not None:
            response._connection_lost(exc)
        self.pool._forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def _overrun(self, response: UpstreamResponse) -> None:
        """The backend sent bytes past the end of its response (a wrong Content-Length, an answer to a request
        body it did not read, ...). They must never reach the client as part of this response, nor be read as
        the next response on this connection: the connection is closed, and a response whose head has not been
        handed over yet fails with 502."""
        self.dirty = True
        if not response._done:
            response._fail(UpstreamProtocolError(f"{self.pool.backend.name}: sent more than one response",
                                                 backend=self.pool.backend.name))
        self.close()

    # -- httptools callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self.response
        if response is not None and response.status:
            # A second message after the final response of this request: see _overrun.
            self.overrun = True
            raise _Overrun

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        if response.status:
            return   # a trailer field (after a chunked body): not a header of the response already sent
        response.header_bytes += len(name) + len(value)
        if response.header_bytes > MAX_HEADER_BYTES or len(response.raw_headers) >= MAX_HEADER_FIELDS:
            self.overrun = True
            response._fail(UpstreamProtocolError(
                f"{self.pool.backend.name}: response header over {MAX_HEADER_BYTES} bytes or "
                f"{MAX_HEADER_FIELDS} fields", backend=self.pool.backend.name))
            self.close()
            raise _Overrun
        response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            response.raw_headers = []   # an interim answer (100 Continue, 103 Early Hints): wait for the real one
            return
        response._headers_done(status, self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response.status == 0:
            return   # the end of an interim 1xx message
        self.reusable = response.keep_alive and not response.close_delimited and not self.dirty
        response._complete()

    # -- writing ---------------------------------------------------------------------------------------------------

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")
        if self.write_paused:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            idle = self.pool.backend.timeouts.idle
            try:
                async with asyncio.timeout(idle):
                    await self.drain_waiter
            except TimeoutError:
                # A backend that stops reading an upload must not hold the request (and the client) for ever.
                self.dirty = True
                self.close()
                raise UpstreamTimeout(f"{self.pool.backend.name}: stopped reading the request body for {idle:g}s",
                                      backend=self.pool.backend.name) from None
            finally:
                self.drain_waiter = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class UpstreamResponse:
    """A backend's answer: status and raw headers now, the body as it arrives."""

    __slots__ = ("conn", "status", "raw_headers", "keep_alive", "close_delimited", "no_body", "head_request",
                 "_chunks", "_buffered", "_waiter", "_done", "_error", "headers_ready", "_released", "_idle",
                 "header_bytes")

    def __init__(self, conn: _Connection, head_request: bool, idle_timeout: float) -> None:
        self.conn = conn
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.keep_alive = False
        self.close_delimited = False
        self.no_body = head_request
        self.head_request = head_request
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: GatewayError | None = None
        self.headers_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released = False
        self._idle = idle_timeout

    # -- called by the connection ----------------------------------------------------------------------------------

    def _headers_done(self, status: int, keep_alive: bool) -> None:
        if not 200 <= status <= 599:
            name = self.conn.pool.backend.name
            self._fail(UpstreamProtocolError(f"{name}: invalid status code {status}", backend=name))
            self.conn.close()
            return
        self.status = status
        self.keep_alive = keep_alive
        if self.head_request or status in NO_BODY_STATUS:
            self.no_body = True
        else:
            self.close_delimited = not _framed(self.raw_headers)
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)
        if self.head_request:
            # llhttp cannot be told that a HEAD answer has no body, so it would wait for Content-Length bytes:
            # the message ends here and the connection is not reused.
            self._done = True
            self.conn.dirty = True

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER and self.conn.transport is not None:
            self.conn.transport.pause_reading()
        self._wake()

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: GatewayError) -> None:
        if self._error is None:
            self._error = error
        if not self.headers_ready.done():
            self.headers_ready.set_exception(error)
        self._wake()

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._done:
            return
        if self.status and self.close_delimited and exc is None:
            self._complete()   # the end of a body delimited by closing the connection
            return
        name = self.conn.pool.backend.name
        if not self.status:
            self._fail(UpstreamProtocolError(f"{name}: closed the connection without a response", backend=name))
        else:
            self._fail(UpstreamBodyError(f"{name}: connection closed before the end of the response body",
                                         backend=name))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the proxy -----------------------------------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, as the backend sends it. Raises ``UpstreamBodyError`` if it breaks off or
        goes silent for longer than the idle timeout."""
        if self.no_body:
            return
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                conn = self.conn
                if self._buffered < LOW_WATER and conn.transport is not None and not conn.closed:
                    conn.transport.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                error = self._error
                if not isinstance(error, UpstreamBodyError):
                    error = UpstreamBodyError(error.detail, backend=error.backend)
                raise error
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._idle):
                    await self._waiter
            except TimeoutError:
                name = self.conn.pool.backend.name
                raise UpstreamBodyError(f"{name}: no body bytes for {self._idle:g}s", backend=name) from None
            finally:
                self._waiter = None

    def take_complete(self, limit: int) -> bytes | None:
        """The whole body, if it has already arrived complete and is at most ``limit`` bytes (else None: stream
        it). Responses without a body (HEAD, 204, 304) are left to the streaming path, which knows their rules."""
        if self.no_body or not self._done or self._error is not None or self._buffered > limit:
            return None
        body = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        return body

    async def read(self, limit: int) -> tuple[bytes, bool]:
        """Up to ``limit`` body bytes and whether there were more (for captures)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            room = limit - size
            if len(chunk) > room:
                parts.append(chunk[:room])
                return b"".join(parts), True
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts), False

    def release(self) -> None:
        """Done with this response: a complete, keep-alive one returns its connection to the pool."""
        if self._released:
            return
        self._released = True
        conn = self.conn
        conn.response = None
        if not (self._done and self._error is None and conn.reusable and not conn.dirty and not self._chunks):
            conn.close()
        conn.pool._release(conn)

    close = release


class Pool:
    """Keep-alive connections to one backend: at most ``limit`` open, the most recently used reused first."""

    def __init__(self, backend: Backend, limit: int | None = None) -> None:
        self.backend = backend
        self.limit = limit or backend.max_connections
        self.open = 0
        self._idle: list[_Connection] = []
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self.closed = False
        self._awaiting: dict[UpstreamResponse, float] = {}   # response -> when its headers are overdue
        self._ticker: asyncio.TimerHandle | None = None

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: Body
                      ) -> UpstreamResponse:
        """Send a request and wait for the response head."""
        head = _request_head(method, target, headers, self.backend, body)
        conn, reused = await self._acquire()
        try:
            return await self._exchange(conn, method, head, body)
        except UpstreamProtocolError:
            # Only an idempotent request may go again (RFC 9110 §9.2.2): the backend may have acted on it.
            replayable = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
            if not (reused and replayable and conn.closed and not conn.overrun):
                raise
        # A stale keep-alive connection: the backend closed it just before our request arrived. Nothing reached
        # its application, so the request goes once more, on a new connection.
        conn, _ = await self._acquire(fresh=True)
        return await self._exchange(conn, method, head, body)

    async def _exchange(self, conn: _Connection, method: str, head: bytes, body: Body) -> UpstreamResponse:
        response = UpstreamResponse(conn, method == "HEAD", self.backend.timeouts.idle)
        conn.response = response
        conn.requests += 1
        conn.reusable = False
        transport = conn.transport
        assert transport is not None
        try:
            if body is None or isinstance(body, bytes):
                transport.write(head + body if body else head)
            else:
                transport.write(head)
                await _send_body(conn, body, head.endswith(b"Transfer-Encoding: chunked\r\n\r\n"), response)
            if not response.headers_ready.done():
                self._watch(response)
                try:
                    await response.headers_ready
                finally:
                    self._awaiting.pop(response, None)
        except (ConnectionError, OSError) as exc:
            response.release()
            raise UpstreamProtocolError(f"{self.backend.name}: connection failed while sending: {exc}",
                                        backend=self.backend.name) from exc
        except BaseException:
            response.release()
            raise
        return response

    def _watch(self, response: UpstreamResponse) -> None:
        """Arm the response timeout. One timer per pool, ticking every ``TIMEOUT_TICK`` while responses are
        awaited, instead of a timer per request (this runs on every request); a timeout fires up to one tick
        late."""
        loop = asyncio.get_running_loop()
        self._awaiting[response] = loop.time() + self.backend.timeouts.response
        if self._ticker is None:
            self._ticker = loop.call_later(TIMEOUT_TICK, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        now = asyncio.get_running_loop().time()
        for response, deadline in list(self._awaiting.items()):
            if now >= deadline:
                del self._awaiting[response]
                _expire(response, self.backend)
        if self._awaiting:
            self._ticker = asyncio.get_running_loop().call_later(TIMEOUT_TICK, self._tick)

    async def _acquire(self, fresh: bool = False) -> tuple[_Connection, bool]:
        now = time.monotonic()
        idle_limit = self.backend.timeouts.idle
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < idle_limit:
                return conn, True
            conn.close()
            self._forget(conn)
        if self.open >= self.limit:
            handed = await self._wait_for_connection()
            if handed is not None:
                return handed, True
        self.open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self.open -= 1
            raise

    async def _wait_for_connection(self) -> _Connection | None:
        """All connections are busy: wait for one to be handed over (or for a slot to open: ``None``)."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.backend.timeouts.connect):
                return await waiter
        except TimeoutError:
            raise UpstreamTimeout(f"{self.backend.name}: all {self.limit} connections busy for "
                                  f"{self.backend.timeouts.connect:g}s", backend=self.backend.name) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        b = self.backend
        try:
            async with asyncio.timeout(b.timeouts.connect):
                _transport, conn = await loop.create_connection(lambda: _Connection(self), b.host, b.port)
        except TimeoutError:
            raise UpstreamTimeout(f"{b.name}: connect timed out after {b.timeouts.connect:g}s", backend=b.name,
                                  retryable=True) from None
        except OSError as exc:
            raise UpstreamConnectError(f"{b.name}: cannot connect to {b.host}:{b.port}: {exc.strerror or exc}",
                                       backend=b.name, retryable=True) from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self.closed:
            conn.close()
            self._forget(conn)
            return
        conn.idle_since = time.monotonic()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        """A connection closed: it no longer counts, and a waiter may open a new one (it is handed ``None``)."""
        if conn.counted_out:
            return
        conn.counted_out = True
        if conn in self._idle:
            self._idle.remove(conn)
        self.open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self) -> None:
        """Close connections idle for longer than the idle timeout (called now and then by the owner)."""
        limit = time.monotonic() - self.backend.timeouts.idle
        for conn in [c for c in self._idle if c.idle_since < limit or c.closed]:
            conn.close()
            self._forget(conn)

    def close(self) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for conn in list(self._idle):
            conn.close()
            self._forget(conn)


def _framed(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body has a length of its own (RFC 9112 §6.3): Content-Length, or a Transfer-Encoding whose last
    coding is chunked. Otherwise it runs until the connection closes."""
    coding = b""
    for name, value in headers:
        lname = name.lower()
        if lname == b"content-length":
            return True
        if lname == b"transfer-encoding":
            coding = value.rsplit(b",", 1)[-1].strip().lower()
    return coding == b"chunked"


def _expire(response: UpstreamResponse, backend: Backend) -> None:
    response._fail(UpstreamTimeout(f"{backend.name}: no response within {backend.timeouts.response:g}s",
                                   backend=backend.name))


def _request_head(method: str, target: str, headers: Iterable[tuple[str, str]], backend: Backend,
                  body: Body) -> bytes:
    lines = [f"{method} {backend.base_path}{target} HTTP/1.1\r\n"]
    has_host = has_length = False
    for name, value in headers:
        lname = name.lower()
        if lname == "host":
            has_host = True
        elif lname == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.append(f"Host: {backend.host}:{backend.port}\r\n")
    if isinstance(body, bytes):
        if not has_length:
            lines.append(f"Content-Length: {len(body)}\r\n")
    elif body is not None and not has_length:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


async def _send_body(conn: _Connection, body: AsyncIterable[bytes], chunked: bool,
                     response: UpstreamResponse) -> None:
    transport = conn.transport
    assert transport is not None
    async for chunk in body:
        if response.headers_ready.done() or conn.closed:
            # The backend answered (or hung up) before the upload ended: stop sending; never reuse.
            conn.dirty = True
            if conn.closed and not response.headers_ready.done():
                raise ConnectionResetError("the backend closed the connection during the upload")
            return
        if not chunk:
            continue
        if chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            transport.write(chunk)
        await conn.drain()
    if chunked and not conn.closed:
        transport.write(b"0\r\n\r\n")
