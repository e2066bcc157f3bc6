"""One backend answer read off a pooled connection: the status and raw headers, then the body as it arrives, with
backpressure (reading from the backend pauses while too much is buffered) and the framing rules of RFC 9112 §6.

The connection that feeds it is seen through ``Link``, the few things a response needs from it, so that this module
does not depend on the connection's class (which depends on this one).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Protocol

from gateway.config.model import Backend
from gateway.errors import GatewayError, UpstreamBodyError, UpstreamProtocolError

HIGH_WATER = 256 * 1024     # buffered response bytes before we stop reading from the backend
LOW_WATER = 64 * 1024
NO_BODY_STATUS = frozenset({204, 304})


class Link(Protocol):
    """What a response needs of the connection it is read from."""

    backend: Backend
    transport: asyncio.Transport | None
    response: UpstreamResponse | None
    closed: bool
    reusable: bool
    dirty: bool
    relayed: tuple[int, list[tuple[bytes, bytes]], tuple[bytes, bool] | None] | None

    def close(self) -> None: ...
    def give_back(self) -> None: ...


class UpstreamResponse:
    """A backend's answer: status and raw headers now, the body as it arrives."""

    __slots__ = ("conn", "status", "raw_headers", "keep_alive", "close_delimited", "no_body", "head_request",
                 "_chunks", "_buffered", "_waiter", "_done", "_error", "headers_ready", "_released", "_idle",
                 "header_bytes", "_loop")

    def __init__(self, conn: Link, head_request: bool, idle_timeout: float,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
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
        self._loop = loop or asyncio.get_running_loop()
        self.headers_ready: asyncio.Future[None] = self._loop.create_future()
        self._released = False
        self._idle = idle_timeout

    # -- called by the connection ----------------------------------------------------------------------------------

    def _headers_done(self, status: int, keep_alive: bool) -> None:
        if not 200 <= status <= 599:
            name = self.conn.backend.name
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
        name = self.conn.backend.name
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
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(self._idle):
                    await self._waiter
            except TimeoutError:
                name = self.conn.backend.name
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
        conn.give_back()

    close = release


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
