"""The public listener's HTTP server: aiohttp's low-level server, with its own parse errors turned into
problem+json like every other error the gateway answers.

aiohttp answers a request it cannot parse (bad request line, oversized target or header, invalid header) before
any handler runs, with a plain-text 400. Here the request handler's ``handle_error`` is overridden so that a client
gets the same RFC 9457 body as for the gateway's own refusals, with the status that says what was wrong:
414 for an oversized request target, 431 for oversized header fields, 400 for anything else malformed.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aiohttp import ClientConnectionResetError, web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from gateway.errors import PROBLEM_JSON

MAX_TARGET = 16384        # bytes in the request line (method, target, version)
MAX_FIELD = 16383         # bytes in one header field; differs from MAX_TARGET so the two limits can be told apart


def _status_for(status: int, exc: BaseException | None) -> tuple[int, str]:
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_TARGET:
            return 414, f"the request target is longer than {MAX_TARGET} bytes"
        return 431, f"a request header field is longer than {MAX_FIELD} bytes"
    if isinstance(exc, BadHttpMessage):
        text = str(exc.message if hasattr(exc, "message") else exc)
        if "Too many headers" in text or "too many headers" in text.lower():
            return 431, "too many request header fields"
        return 400, f"malformed HTTP request: {text[:200]}"
    return status, HTTPStatus(status).description if status in HTTPStatus._value2member_map_ else ""


class ProblemRequestHandler(RequestHandler):
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
        status, detail = _status_for(status, exc)
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        body = {"type": f"urn:strangler:problem:{'bad-request' if status == 400 else str(status)}",
                "title": title, "status": status, "detail": detail}
        resp = web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM_JSON)
        resp.force_close()
        return resp


class PublicServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


def public_server(handler: Any, client_idle: float = 60.0) -> web.Server:
    # aiohttp's keep-alive timer closes a connection that has not delivered a complete request for this long, so
    # it bounds both an idle keep-alive client and one dripping its request head (slowloris); aiohttp's default
    # is an hour. routes.yaml `limits.client_idle` (default 60 s, as nginx's client_header_timeout).
    return PublicServer(handler, handler_cancellation=True, access_log=None, max_line_size=MAX_TARGET,
                        max_field_size=MAX_FIELD, keepalive_timeout=client_idle)
