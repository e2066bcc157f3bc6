"""A lean HTTP/1.1 keep-alive connection pool to one backend, with httptools (llhttp, the C parser Node.js uses)
reading responses.

Why not aiohttp's client: a proxy needs a fraction of what a general client does (no cookies, redirects,
decompression, URL handling, default headers), and on a gateway that fraction is paid on every request. This
module does only the proxy's part: write the request head as given, stream the body, parse the response head, hand
the body over chunk by chunk with backpressure, and return the connection to the pool only after a complete
response that the backend agreed to keep alive.

    Pool.request(method, target, headers, body, last) -> UpstreamResponse   (raises GatewayError before the headers)
    UpstreamResponse.chunks() -> async iterator of bytes                     (raises UpstreamBodyError if cut short)
    UpstreamResponse.release()                                               (back to the pool, or closed)

Framing follows RFC 9112 §6: a response to HEAD, and 1xx/204/304 responses, have no body; otherwise
Transfer-Encoding: chunked or Content-Length delimit it, and without either the body runs until the backend
closes the connection (never reused). A request body without Content-Length is sent chunked.

Three modules: this one (the pool: acquiring, reusing and counting connections, writing requests, response
timeouts), ``gateway.proxy.connection`` (one connection and its parser) and ``gateway.proxy.response`` (one
answer's head and body).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterable, Iterable

from gateway.config.model import Backend
from gateway.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout, UpstreamTLSError
from gateway.proxy.connection import Connection
from gateway.proxy.headers import Fields
from gateway.proxy.response import UpstreamResponse
from gateway.proxy.tls import BackendTLSClient, handshake_error

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
TIMEOUT_TICK = 0.05          # seconds between two checks of the response deadlines

Body = AsyncIterable[bytes] | bytes | None

__all__ = ["Body", "Pool", "UpstreamResponse"]


class Pool:
    """Keep-alive connections to one backend: at most ``limit`` open, the most recently used reused first."""

    def __init__(self, backend: Backend, limit: int | None = None, tls: BackendTLSClient | None = None) -> None:
        self.backend = backend
        self.tls = tls   # set for https:// backends: connections go through asyncio's TLS transport
        self.limit = limit or backend.max_connections
        self.open = 0
        self._idle: list[Connection] = []
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self.closed = False
        self._awaiting: dict[UpstreamResponse, float] = {}   # response -> when its headers are overdue
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: Body,
                      last: tuple[str, str] | None = None) -> UpstreamResponse:
        """Send a request and wait for the response head. ``last``: one more field, after ``headers``."""
        head = _request_head(method, target, headers, self.backend, body, last)
        conn = self._reuse()
        reused = conn is not None
        if conn is None:
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

    async def _exchange(self, conn: Connection, method: str, head: bytes, body: Body) -> UpstreamResponse:
        response = UpstreamResponse(conn, method == "HEAD", self.backend.timeouts.idle, self._event_loop())
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
        except UpstreamTLSError as exc:   # the backend refused our certificate after the TLS 1.3 handshake
            response.release()
            if self.tls is not None:
                self.tls.report(exc)
            raise
        except (ConnectionError, OSError) as exc:
            response.release()
            raise UpstreamProtocolError(f"{self.backend.name}: connection failed while sending: {exc}",
                                        backend=self.backend.name) from exc
        except BaseException:
            response.release()
            raise
        return response

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the pool serves. Asked once: before Python 3.12 every ``asyncio.get_running_loop()`` is also a
        ``getpid()`` system call (a guard against forks), twice per request here."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _watch(self, response: UpstreamResponse) -> None:
        """Arm the response timeout. One timer per pool, ticking every ``TIMEOUT_TICK`` while responses are
        awaited, instead of a timer per request (this runs on every request); a timeout fires up to one tick
        late."""
        loop = self._event_loop()
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

    def _reuse(self) -> Connection | None:
        """The most recently used idle connection still fit for a request, if any (no await: the common case)."""
        if not self._idle:
            return None
        now = time.monotonic()
        idle_limit = self.backend.timeouts.idle
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < idle_limit:
                return conn
            conn.close()
            self._forget(conn)
        return None

    async def _acquire(self, fresh: bool = False) -> tuple[Connection, bool]:
        if not fresh:
            conn = self._reuse()
            if conn is not None:
                return conn, True
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

    async def _wait_for_connection(self) -> Connection | None:
        """All connections are busy: wait for one to be handed over (or for a slot to open: ``None``)."""
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
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

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        b = self.backend
        tls = self.tls
        try:
            async with asyncio.timeout(b.timeouts.connect):
                if tls is None:
                    transport, conn = await loop.create_connection(
                        lambda: Connection(b, self._release, self._forget), b.host, b.port)
                else:
                    tls.refresh()
                    transport, conn = await loop.create_connection(
                        lambda: Connection(b, self._release, self._forget), b.host, b.port, ssl=tls.context,
                        server_hostname=tls.server_name, ssl_handshake_timeout=b.timeouts.connect)
                    conn.ssl_object = transport.get_extra_info("ssl_object")
                    tls.connected(conn.ssl_object)
        except ssl.SSLError as exc:   # before OSError, of which it is a subclass
            assert tls is not None
            raise tls.report(handshake_error(exc, b)) from exc
        except TimeoutError:
            raise UpstreamTimeout(f"{b.name}: connect timed out after {b.timeouts.connect:g}s", backend=b.name,
                                  retryable=True) from None
        except OSError as exc:
            raise UpstreamConnectError(f"{b.name}: cannot connect to {b.host}:{b.port}: {exc.strerror or exc}",
                                       backend=b.name, retryable=True) from exc
        return conn

    def _release(self, conn: Connection) -> None:
        if self.tls is not None and conn.requests == 1:
            self.tls.remember(conn.ssl_object)   # the TLS 1.3 ticket has arrived by the end of the first response
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

    def _forget(self, conn: Connection) -> None:
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


def _expire(response: UpstreamResponse, backend: Backend) -> None:
    response._fail(UpstreamTimeout(f"{backend.name}: no response within {backend.timeouts.response:g}s",
                                   backend=backend.name))


def _request_head(method: str, target: str, headers: Iterable[tuple[str, str]], backend: Backend,
                  body: Body, last: tuple[str, str] | None = None) -> bytes:
    """The request's head: ``headers``, then ``last`` (a field of this request only: its ``traceparent``), then
    ``Host`` and the body's framing if the headers lack them."""
    rendered = headers.rendered if isinstance(headers, Fields) else None
    if rendered is None:
        fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
        # Names are tokens and values hold no CR or LF (the screen and the header rewriting saw to both), so a
        # field named X starts a line of the block.
        lower = "\n" + fields.lower()
        rendered = (fields, "\nhost:" in lower, "\ncontent-length:" in lower)
        if isinstance(headers, Fields):
            headers.rendered = rendered
    fields, has_host, has_length = rendered
    extra = "" if has_host else f"Host: {backend.host}:{backend.port}\r\n"
    if last is not None:
        extra += f"{last[0]}: {last[1]}\r\n"
    if body is not None and not has_length:
        extra += f"Content-Length: {len(body)}\r\n" if isinstance(body, bytes) else "Transfer-Encoding: chunked\r\n"
    return f"{method} {backend.base_path}{target} HTTP/1.1\r\n{fields}{extra}\r\n".encode("latin-1")


async def _send_body(conn: Connection, body: AsyncIterable[bytes], chunked: bool,
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
            # Framing and data as separate buffers (one writev): formatting them into one bytes would copy
            # every byte of the upload once more.
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        await conn.drain()
    if chunked and not conn.closed:
        transport.write(b"0\r\n\r\n")
