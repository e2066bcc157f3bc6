"""The gateway's errors, described in one place and mapped to HTTP in one place.

    GatewayError                      -> a problem+json response (RFC 9457) with ``status``
    +-- InternalError                 500 a bug in the gateway (the handler raised something unexpected)
    +-- ClientRequestError            4xx: the client's request is at fault
    |   +-- BadRequest                400 (unparseable path, encoded slash, bad header)
    |   |   +-- MalformedRequest      400 the message itself (request line, fields, framing): closes
    |   +-- RequestTimeout            408 the client stopped sending its body
    |   +-- PayloadTooLarge           413
    |   +-- UriTooLong                414
    |   +-- MisdirectedRequest        421 a Host this listener does not answer for (the admin listener)
    |   +-- HeaderFieldsTooLarge      431 one field, the number of fields, or the whole head
    |   +-- Unimplemented             501 a method or transfer coding the gateway does not implement
    |   +-- VersionNotSupported       505 (the client's HTTP version, so a client error despite the 5xx)
    +-- UpstreamError                 the backend is at fault
    |   +-- UpstreamConnectError      502 refused / unreachable / reset before any response byte
    |   +-- UpstreamProtocolError     502 answered garbage or closed before the response headers
    |   +-- UpstreamTimeout           504 connect or response-header timeout
    |   +-- UpstreamRetryableStatus   the backend's own 502/503, held back for a fallback retry
    +-- Unavailable                   503 over the backend's concurrency limit, or its circuit is open

A failure *after* the response headers went to the client cannot become a status code any more: the proxy aborts
the client connection instead (``UpstreamBodyError``), so a cut body is never passed off as complete.

An error whose ``closes`` is true ends the connection after its answer (``Connection: close``): after a malformed
or oversized message, or an unread body, the gateway can no longer tell where the next request would start.

Lower-level exceptions are translated into this tree in exactly two functions: ``gateway.proxy.upstream.translate``
(backends) and ``gateway.server.wire.translate`` (requests aiohttp could not parse).
"""

from __future__ import annotations

import json

from aiohttp import web

PROBLEM_JSON = "application/problem+json"


class GatewayError(Exception):
    status = 500
    code = "internal"
    title = "Gateway error"
    closes = False

    def __init__(self, detail: str = "", *, backend: str | None = None, retryable: bool = False) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.backend = backend
        # True when the backend provably never saw the request (connection refused): the fallback and the
        # guard treat that differently from a failure halfway through.
        self.retryable = retryable

    def problem(self, instance: str | None = None, trace_id: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {
            "type": f"urn:strangler:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.backend:
            body["backend"] = self.backend
        if trace_id:
            body["trace_id"] = trace_id
        return body


class InternalError(GatewayError):
    pass


class ClientRequestError(GatewayError):
    status = 400
    code = "bad-request"
    title = "Bad request"


class BadRequest(ClientRequestError):
    pass


class MalformedRequest(BadRequest):
    closes = True   # RFC 9112 §6.3: after faulty framing the server MUST close the connection


class PayloadTooLarge(ClientRequestError):
    status = 413
    code = "payload-too-large"
    title = "Request body too large"
    closes = True   # the body is not read: the next request cannot be found after it (RFC 9110 §15.5.14)


class RequestTimeout(ClientRequestError):
    status = 408
    code = "request-timeout"
    title = "Request body timed out"
    closes = True   # the rest of a stalled body may never come: do not wait for it on this connection


class UriTooLong(ClientRequestError):
    status = 414
    code = "uri-too-long"
    title = "Request target too long"
    closes = True


class MisdirectedRequest(ClientRequestError):
    status = 421
    code = "misdirected-request"
    title = "Misdirected request"


class HeaderFieldsTooLarge(ClientRequestError):
    status = 431
    code = "request-header-fields-too-large"
    title = "Request header fields too large"
    closes = True


class Unimplemented(ClientRequestError):   # RFC 9110 §15.6.2
    status = 501
    code = "not-implemented"
    title = "Not implemented"
    closes = True   # an unknown transfer coding: the body cannot be delimited


class VersionNotSupported(ClientRequestError):
    status = 505
    code = "http-version-not-supported"
    title = "HTTP version not supported"
    closes = True   # the rest of the connection may not even be HTTP/1


class UpstreamError(GatewayError):
    status = 502
    code = "bad-gateway"
    title = "Bad gateway"


class UpstreamConnectError(UpstreamError):
    code = "backend-unreachable"
    title = "Backend refused or unreachable"


class UpstreamProtocolError(UpstreamError):
    code = "backend-broken"
    title = "Backend answered with an invalid response"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "backend-timeout"
    title = "Backend timed out"


class UpstreamBodyError(UpstreamError):
    """The response body broke after the headers were sent: the client connection is aborted."""

    code = "backend-body-broken"
    title = "Backend response body incomplete"


class UpstreamRetryableStatus(UpstreamError):
    """The backend answered 502 or 503 and the route may retry elsewhere; the answer was not sent to the client."""

    code = "backend-answered-unavailable"
    title = "Backend answered 502/503"


class Unavailable(GatewayError):
    status = 503
    code = "backend-unavailable"
    title = "Backend unavailable"


class ConcurrencyLimited(Unavailable):
    code = "backend-overloaded"
    title = "Backend over its concurrency limit"


class CircuitOpen(Unavailable):
    code = "circuit-open"
    title = "Backend circuit open"


def problem_response(error: GatewayError, *, instance: str | None = None,
                     trace_header: tuple[str, str] | None = None) -> web.Response:
    """The one place a GatewayError becomes an HTTP response; ``trace_header`` is ``("X-Trace-Id", id)``, sent as a
    header and named in the body so a user can look the request up."""
    trace_id = trace_header[1] if trace_header else None
    body = json.dumps(error.problem(instance, trace_id)).encode()
    resp = web.Response(status=error.status, body=body, content_type=PROBLEM_JSON,
                        headers=[trace_header] if trace_header else None)
    if error.status == 503:
        resp.headers["Retry-After"] = "1"
    if error.closes:
        resp.force_close()   # sends Connection: close, and the connection ends after this answer
    return resp


def problem(status: int, title: str, detail: str, code: str = "error") -> web.Response:
    """A problem+json response for the admin API and other non-proxy answers."""
    body = {"type": f"urn:strangler:problem:{code}", "title": title, "status": status, "detail": detail}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=PROBLEM_JSON)
