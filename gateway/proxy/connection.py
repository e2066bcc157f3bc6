"""One keep-alive connection to a backend (an asyncio protocol over TCP, or over asyncio's TLS transport) and the
httptools parser that reads the response currently awaited on it into an ``UpstreamResponse``.

A connection is reusable only after a complete response that the backend agreed to keep alive, with nothing sent
past its end; anything else closes it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import httptools

from gateway.config.model import Backend
from gateway.errors import UpstreamProtocolError, UpstreamTimeout
from gateway.proxy.response import UpstreamResponse
from gateway.proxy.tls import handshake_error

MAX_HEADER_BYTES = 64 * 1024   # a backend's response head beyond this is an error, not memory to fill
MAX_HEADER_FIELDS = 200


class _Overrun(Exception):
    """Raised inside a parser callback to stop parsing what the backend should not have sent."""


class Connection(asyncio.Protocol):
    """One TCP connection to the backend and the response currently being read on it."""

    __slots__ = ("backend", "on_idle", "on_closed", "transport", "parser", "response", "closed", "reusable", "idle_since", "write_paused",
                 "drain_waiter", "requests", "dirty", "counted_out", "overrun", "ssl_object", "body_left",
                 "body_seen", "length_pending", "relayed")

    def __init__(self, backend: Backend, on_idle: Callable[[Connection], None],
                 on_closed: Callable[[Connection], None]) -> None:
        self.backend = backend
        self.on_idle = on_idle        # the pool takes the connection back (or closes it)
        self.on_closed = on_closed    # the pool stops counting it
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
        self.ssl_object: ssl.SSLObject | None = None   # over TLS: kept to read its session after a close
        self.body_left = 0        # Content-Length bytes still to come that bypass the parser (see _body_data)
        self.body_seen = 0        # body bytes the parser has handed over for the current response
        self.length_pending = False   # a head arrived in this read and its body may go on past it
        # The last complete answer's length, raw fields and relayed block (forward._relayed_fields)
        self.relayed: tuple[int, list[tuple[bytes, bytes]], tuple[bytes, bool] | None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.body_left:
            self._body_data(data)
            return
        response = self.response
        if response is None:   # bytes while idle: the backend is confused; never reuse this connection
            self.close()
            return
        try:
            self.parser.feed_data(data)
            if self.length_pending:
                self._bypass_rest(response)
        except _Overrun:
            self._overrun(response)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Overrun) or self.overrun:
                self._overrun(response)
                return
            response._fail(UpstreamProtocolError(f"{self.backend.name}: invalid response: {exc}",
                                                 backend=self.backend.name))
            self.close()
        except httptools.HttpParserUpgrade:
            response._fail(UpstreamProtocolError(f"{self.backend.name}: unexpected protocol upgrade",
                                                 backend=self.backend.name))
            self.close()
        except httptools.HttpParserError as exc:
            response._fail(UpstreamProtocolError(f"{self.backend.name}: invalid response: {exc}",
                                                 backend=self.backend.name))
            self.close()

    def _bypass_rest(self, response: UpstreamResponse) -> None:
        """A head arrived in this read and its body did not end in it: the rest of a Content-Length body skips
        the parser (``_body_data``). Decided after the read, so that the common small answer, whole in one read,
        never looks at its headers twice."""
        self.length_pending = False
        if self.response is response and not self.closed:
            length = _content_length(response.raw_headers)
            if length > self.body_seen:
                self.body_left = length - self.body_seen

    def _body_data(self, data: bytes) -> None:
        """Bytes of a Content-Length body after the parser has seen its head: handed over as they came. llhttp
        would only count them and copy each into a new bytes object, which for a large body costs more than all
        the rest of the relay."""
        response = self.response
        if response is None:
            self.close()
            return
        left = self.body_left
        size = len(data)
        if size < left:
            self.body_left = left - size
            response._feed(data)
            return
        self.body_left = 0
        # llhttp still waits inside the body it was not shown: the next response needs a parser of its own.
        self.parser = httptools.HttpResponseParser(self)
        response._feed(data if size == left else data[:left])
        self.on_message_complete()
        if size > left:
            self._overrun(response)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_exception(ConnectionResetError("connection lost while sending"))
        response = self.response
        if response is not None:
            if isinstance(exc, ssl.SSLError) and not response.status:
                # Under TLS 1.3 the client's handshake ends before the backend has checked our certificate:
                # its refusal arrives as an alert in place of the response.
                response._fail(handshake_error(exc, self.backend, request_sent=True))
            response._connection_lost(exc)
        self.on_closed(self)

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
            response._fail(UpstreamProtocolError(f"{self.backend.name}: sent more than one response",
                                                 backend=self.backend.name))
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
                f"{self.backend.name}: response header over {MAX_HEADER_BYTES} bytes or "
                f"{MAX_HEADER_FIELDS} fields", backend=self.backend.name))
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
        if response.status and not response.no_body:
            self.body_seen = 0
            self.length_pending = True

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        self.response._feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.body_left = 0
        self.length_pending = False
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
            idle = self.backend.timeouts.idle
            try:
                async with asyncio.timeout(idle):
                    await self.drain_waiter
            except TimeoutError:
                # A backend that stops reading an upload must not hold the request (and the client) for ever.
                self.dirty = True
                self.close()
                raise UpstreamTimeout(f"{self.backend.name}: stopped reading the request body for {idle:g}s",
                                      backend=self.backend.name) from None
            finally:
                self.drain_waiter = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True



    def give_back(self) -> None:
        self.on_idle(self)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The body's length when Content-Length frames it (0 otherwise: chunked, close-delimited or empty). llhttp
    has already refused a conflicting, malformed or doubled Content-Length, and one next to Transfer-Encoding."""
    length = 0
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            return 0
        if lname == b"content-length":
            length = int(value)
    return length
