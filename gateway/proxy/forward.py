"""Forward one client request to one backend, streaming both bodies.

Neither body is ever buffered whole: request chunks go to the backend as the client sends them, response chunks
go to the client as the backend sends them, with backpressure both ways (aiohttp's ``drain``). A ``Tap`` can
watch both streams (the shadow uses it to copy the request body and capture the primary answer, capped); it sees
the bytes, it cannot change or delay them.

When the backend fails after the response headers went out, the client connection is aborted so that a cut body
is never passed off as complete (for chunked responses, the final zero-length chunk is never written).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
from aiohttp import hdrs, web

from gateway.config.model import Backend
from gateway.errors import (
    GatewayError,
    MalformedRequest,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamBodyError,
    UpstreamRetryableStatus,
)
from gateway.proxy import upstream
from gateway.proxy.headers import Headers, backend_fields, downstream_response_headers, with_extra
from gateway.proxy.pool import Pool, UpstreamResponse
from gateway.proxy.reply import RelayedReply, reason

SMALL_BODY = 64 * 1024   # a complete body up to this size is sent with the headers in one write
BODYLESS_STATUS = frozenset({204, 304})
_LINGER_ZERO = struct.pack("ii", 1, 0)   # SO_LINGER on, 0 s: close() resets the connection


class _Relayed(web.StreamResponse):
    """A response relayed from a backend: its headers are the backend's. aiohttp fills in ``Server`` and, for a body
    without one, ``Content-Type: application/octet-stream``; a proxy invents neither (RFC 9110 §10.2.4: Server
    names the origin's software; §8.3: without Content-Type the recipient decides, not an intermediary). ``Date``
    is still added when missing, as RFC 9110 §6.6.1 asks of a recipient with a clock."""

    async def _prepare_headers(self) -> None:
        headers = self._headers
        invented = [name for name in (hdrs.CONTENT_TYPE, hdrs.SERVER) if name not in headers]
        await super()._prepare_headers()
        for name in invented:
            headers.popall(name, None)


class RelayedStreamResponse(_Relayed):
    pass


class RelayedResponse(_Relayed, web.Response):
    pass


class Tap(Protocol):
    """Observes one exchange. Every method must be cheap and must not raise."""

    def request_chunk(self, chunk: bytes) -> None: ...
    def request_end(self, complete: bool) -> None: ...
    def response_start(self, status: int, headers: Headers) -> None: ...
    def response_chunk(self, chunk: bytes) -> None: ...
    def response_end(self, complete: bool) -> None: ...


class Outcome:
    """What happened on the primary exchange: for the access log, metrics, the guard and the shadow."""

    __slots__ = ("status", "error", "bytes_out", "upstream_seconds", "backend", "aborted", "fell_back")

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.status = 0
        self.error: GatewayError | None = None
        self.bytes_out = 0
        self.upstream_seconds = 0.0
        self.aborted = False
        self.fell_back = False   # the new side failed and legacy answered instead (on_error: fallback)


async def request_body(request: web.BaseRequest, tap: Tap | None, limit: int | None,
                       idle: float = 60.0) -> AsyncIterator[bytes]:
    """The client's body as a stream, watched by ``tap`` and cut at ``limit`` bytes (413 before it starts, or an
    aborted upload when a chunked body grows past it). A client that sends nothing for ``idle`` seconds mid-body
    loses the request (408): it must not hold an upstream connection for ever."""
    seen = 0
    complete = False
    try:
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            # The gateway streams the body itself, so it answers the client's Expect (RFC 9110 §10.1.1) as soon
            # as it is ready to read, instead of making the client wait out its own timeout.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader = request.content
        while True:
            try:
                async with asyncio.timeout(idle):
                    # What has arrived, as the parser stored it: read(n) would copy each socket read into
                    # n-byte slices, the largest cost of an upload.
                    chunk = await reader.readany()
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled for {idle:g}s") from None
            except web.RequestPayloadError as exc:
                # The parser found the body's framing broken (a bad chunk): the upload must not reach the
                # backend looking complete, and the connection cannot be read further.
                raise MalformedRequest(f"the request body is malformed: {exc}") from None
            if not chunk:
                break
            seen += len(chunk)
            if limit is not None and seen > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            if tap is not None:
                tap.request_chunk(chunk)
            yield chunk
        complete = True
    finally:
        if tap is not None:
            tap.request_end(complete)


async def forward(request: web.BaseRequest, backend: Backend, pool: Pool, raw_target: str,
                  headers: Headers, outcome: Outcome, *, tap: Tap | None = None, body_limit: int | None = None,
                  extra_response_headers: Headers = (), retry_statuses: frozenset[int] = frozenset(),
                  last: tuple[str, str] | None = None) -> web.StreamResponse | RelayedReply:
    """Proxy ``request`` to ``backend`` and stream the answer back; raises ``GatewayError`` before the response
    started (the caller turns it into a problem+json response). ``last``: a field sent after ``headers`` (the
    attempt's ``traceparent``), so that headers shared by requests stay as they are."""
    # Whether the request has a body by its framing, not whether bytes are waiting: a body the screen refused
    # is at its end with an error, and must fail the exchange rather than be sent on as an empty one.
    body = request_body(request, tap, body_limit, backend.timeouts.idle) if request.body_exists else None
    if body is None and tap is not None:
        tap.request_end(True)
    started = time.perf_counter()
    resp = await pool.request(request.method, raw_target, headers, body, last)
    if resp.status in retry_statuses:
        resp.close()
        raise UpstreamRetryableStatus(f"{backend.name} answered {resp.status}", backend=backend.name)
    try:
        outcome.status = resp.status
        if tap is not None:
            tap.response_start(resp.status, downstream_response_headers(resp.raw_headers))
        whole = resp.take_complete(SMALL_BODY)
        if whole is not None:
            # The whole (small) body came with the headers, as most API answers do: relay it in one write.
            relayed = _relayed_fields(resp, extra_response_headers, len(whole))
            if relayed is not None:
                _complete(outcome, tap, whole, started)
                return RelayedReply(resp.status, relayed[0], whole, relayed[1])
            return _complete_response(resp.status, downstream_response_headers(resp.raw_headers),
                                      extra_response_headers, whole, outcome, tap, started)
        out_headers = downstream_response_headers(resp.raw_headers)
        out = RelayedStreamResponse(status=resp.status, reason=reason(resp.status), headers=out_headers)
        for name, value in extra_response_headers:
            out.headers.add(name, value)
        await out.prepare(request)
        if request.method != "HEAD" and resp.status not in BODYLESS_STATUS:
            await _stream_body(resp, out, backend, outcome, tap)
        outcome.upstream_seconds = time.perf_counter() - started
        if outcome.aborted:
            return out
        if tap is not None:
            tap.response_end(True)
        await out.write_eof()
        return out
    finally:
        resp.release()


async def _stream_body(resp: UpstreamResponse, out: web.StreamResponse, backend: Backend, outcome: Outcome,
                       tap: Tap | None) -> None:
    idle = backend.timeouts.idle
    try:
        async for chunk in resp.chunks():
            if tap is not None:
                tap.response_chunk(chunk)
            outcome.bytes_out += len(chunk)
            try:
                async with asyncio.timeout(idle):
                    await out.write(chunk)
            except TimeoutError:
                # A client that stops reading must not hold the upstream connection for ever.
                outcome.aborted = True
                _abort_client(out)
                return
    except UpstreamBodyError as exc:
        outcome.error = exc
        outcome.aborted = True
        if tap is not None:
            tap.response_end(False)
        _abort_client(out)


def _complete_response(status: int, headers: Headers, extra: Headers, body: bytes, outcome: Outcome,
                       tap: Tap | None, started: float) -> web.Response:
    out = RelayedResponse(status=status, reason=reason(status), headers=headers)
    for name, value in extra:
        out.headers.add(name, value)
    out.body = body   # keeps the backend's Content-Length header when it had one; aiohttp sets it otherwise
    _complete(outcome, tap, body, started)
    return out


def _relayed_fields(resp: UpstreamResponse, extra: Headers, length: int) -> tuple[bytes, bool] | None:
    """The client's header block for a complete answer: ``headers.backend_fields``, then ``extra``. A backend
    connection keeps the block it relayed last: a
    backend tends to send the same fields answer after answer (until its Date ticks), so a repeat costs one
    comparison of the raw fields instead of their rewriting."""
    conn = resp.conn
    raw = resp.raw_headers
    last = conn.relayed
    if last is not None and last[0] == length and last[1] == raw:
        fields = last[2]
    else:
        fields = backend_fields(raw, length)
        conn.relayed = (length, raw, fields)
    return with_extra(fields, extra) if fields is not None else None


def _complete(outcome: Outcome, tap: Tap | None, body: bytes, started: float) -> None:
    if tap is not None:
        tap.response_chunk(body)
        tap.response_end(True)
    outcome.bytes_out = len(body)
    outcome.upstream_seconds = time.perf_counter() - started


def _abort_client(out: web.StreamResponse) -> None:
    """Reset the client connection without completing the response (no final chunk, fewer bytes than
    Content-Length): the client sees a broken transfer, never a short body that looks complete.

    The transport is taken *before* the protocol is told to close: ``force_close`` closes gracefully and forgets
    the transport, and a graceful close behind a client that stopped reading waits for ever for a full TCP window
    to drain. Instead the socket lingers zero seconds, so closing it sends RST (RFC 9293 §3.6: an abort) and the
    kernel drops the unsent queue at once, rather than keeping megabytes per stalled client."""
    req = getattr(out, "_req", None)
    if req is None:
        return
    transport = req.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        transport.abort()
    with contextlib.suppress(Exception):
        req.protocol.force_close()   # stop the protocol from serving this connection any further


def is_upgrade(request: web.BaseRequest) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


async def forward_websocket(request: web.BaseRequest, backend: Backend, session: aiohttp.ClientSession,
                            raw_target: str, headers: Headers, outcome: Outcome) -> web.StreamResponse:
    """Relay a WebSocket session message by message (aiohttp terminates the handshake on both sides)."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    fwd = [(k, v) for k, v in headers if not k.lower().startswith("sec-websocket-")
           and k.lower() not in ("upgrade", "connection")]
    url = upstream.upstream_url(backend, raw_target)
    try:
        up = await session.ws_connect(url, headers=fwd, protocols=protocols, autoping=False, max_msg_size=0,
                                      autoclose=False,
                                      server_hostname=backend.tls.server_name if backend.tls is not None else None)
    except aiohttp.WSServerHandshakeError as exc:
        outcome.status = 502
        raise upstream.UpstreamProtocolError(
            f"{backend.name}: refused the WebSocket upgrade with status {exc.status}", backend=backend.name) from exc
    except BaseException as exc:  # noqa: BLE001 - translated; cancellation passes through
        raise upstream.translate(exc, backend, phase="headers") from exc
    down = web.WebSocketResponse(protocols=[up.protocol] if up.protocol else (), autoping=False, max_msg_size=0,
                                 autoclose=False)
    await down.prepare(request)
    outcome.status = 101
    try:
        await _relay(up, down)
    finally:
        await up.close()
        await down.close()
    return down


async def _relay(up: aiohttp.ClientWebSocketResponse, down: web.WebSocketResponse) -> None:
    async def pump(src: aiohttp.ClientWebSocketResponse | web.WebSocketResponse,
                   dst: aiohttp.ClientWebSocketResponse | web.WebSocketResponse) -> None:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await dst.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.CLOSE:
                await dst.close(code=msg.data or 1000, message=(msg.extra or "").encode())
                return
            else:
                return

    tasks = [asyncio.ensure_future(pump(up, down)), asyncio.ensure_future(pump(down, up))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def mark_error(outcome: Outcome, error: GatewayError) -> GatewayError:
    outcome.error = error
    outcome.status = error.status
    return error

