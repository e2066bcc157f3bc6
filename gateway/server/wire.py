"""The public listener's HTTP server: aiohttp's low-level server, with every byte a client sends screened first
(``gateway.server.screen``) and every request it cannot take answered as problem+json, like the gateway's other
refusals.

aiohttp answers a request it cannot parse before any handler runs, with a plain-text 400. Here the request
handler's ``handle_error`` turns the parse error into the gateway's error tree (``translate``) and answers it with
``gateway.errors.problem_response``, the one place errors become responses: 414 for an oversized request target,
431 for oversized header fields or head, 501/505 for what the gateway does not speak, 400 for anything else
malformed. Such answers use ``HTTP/1.1`` (RFC 9112 §2.3: the highest version the server speaks with a major version
no higher than the client's; aiohttp would say HTTP/1.0 for a request it could not read) and close the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import ClientConnectionResetError, web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import ERROR, RequestHandler

from gateway.config.model import Limits
from gateway.errors import (
    GatewayError,
    HeaderFieldsTooLarge,
    InternalError,
    MalformedRequest,
    UpstreamTimeout,
    UriTooLong,
    problem_response,
)
from gateway.server.screen import MAX_FIELD, MAX_TARGET, Refused, Screen, ScreenedParser

log = logging.getLogger("strangler.gateway")

PARSER_MAX_FIELDS = 128   # aiohttp's default; the screen allows fewer (screen.MAX_FIELDS)

# The message aiohttp hands the error handler for a request it could not read, as HTTP/1.1.
_ERROR_11 = ERROR._replace(version=HttpVersion11)


def translate(status: int, exc: BaseException | None) -> GatewayError:
    """The one place where a request aiohttp could not parse or handle becomes a ``GatewayError``."""
    if isinstance(exc, Refused):
        return exc.error
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_TARGET:
            return UriTooLong(f"the request target is longer than {MAX_TARGET} bytes")
        return HeaderFieldsTooLarge(f"a request header field is longer than {MAX_FIELD} bytes")
    if isinstance(exc, HttpProcessingError):
        text = str(exc.message if hasattr(exc, "message") else exc)
        if "too many headers" in text.lower():
            return HeaderFieldsTooLarge("too many request header fields")
        return MalformedRequest(f"malformed HTTP request: {text[:200]}")
    if status == 504:
        return UpstreamTimeout("the request was not answered in time")
    return InternalError("the gateway failed while handling this request")


class ProblemRequestHandler(RequestHandler):
    def __init__(self, manager: PublicServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        limits = manager.limits()
        screen = Screen(limits.max_request_head, limits.underscores_in_headers)
        self._parser = ScreenedParser(self._parser, screen, self)
        self.peer: str | None = None   # the client's address, for X-Forwarded-For: read once per connection
        # The previous request's header fields, how they were rewritten, and for which setting (server.handler).
        self.last_forwarded: tuple[tuple[tuple[bytes, bytes], ...], str, list[tuple[str, str]]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple | list) and peer:
            self.peer = str(peer[0])

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, ConnectionResetError | ClientConnectionResetError):
            # The client went away mid-exchange: nobody to answer and nothing wrong with the gateway, so no
            # error-level traceback per disconnecting client.
            self.force_close()
            raise ConnectionError("client disconnected")
        if isinstance(exc, BadHttpMessage):
            # A client's malformed request is the client's problem: one line, not an error-level traceback that
            # any client could use to fill the operator's log.
            if request.writer.output_size > 0:
                raise ConnectionError("response already started")
            self.logger.info("refused a malformed request from %s: %s", request.remote, str(exc)[:200])
        else:
            # The base class logs and refuses when a response already started; keep that behaviour.
            super().handle_error(request, status, exc, message)
        error = translate(status, exc)
        resp = problem_response(error)
        resp.force_close()
        return resp


class PublicServer(web.Server):
    def __init__(self, handler: Any, *, limits: Callable[[], Limits], **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._request, **kwargs)
        self.limits = limits

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        if message is ERROR:
            message = _ERROR_11
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop)

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


def public_server(handler: Any, limits: Callable[[], Limits]) -> web.Server:
    """The public listener's server. ``limits()`` is the current config's ``limits:`` section, read as each
    connection opens (so a reload applies to the connections that follow)."""
    # aiohttp's keep-alive timer closes a connection that has not delivered a complete request for this long, so
    # it bounds both an idle keep-alive client and one dripping its request head (slowloris); aiohttp's default
    # is an hour. routes.yaml `limits.client_idle` (default 60 s, as nginx's client_header_timeout).
    # aiohttp's own limits equal the screen's, which counts whole lines and so always refuses first.
    return PublicServer(handler, limits=limits, handler_cancellation=True, access_log=None,
                        max_line_size=MAX_TARGET, max_field_size=MAX_FIELD, max_headers=PARSER_MAX_FIELDS,
                        keepalive_timeout=limits().client_idle)
