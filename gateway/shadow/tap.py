"""``ShadowTap``: the copy of one primary exchange, taken while it streams by.

It holds the request body up to the route's ``max_body`` and the response up to ``RESPONSE_CAPTURE``, so a copy's
memory is bounded whatever the client and the backend send. It only appends to lists: cheap and infallible on the
request path.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.compare.rules import Captured
from gateway.config.model import Backend, ShadowSpec
from gateway.proxy.headers import Headers

if TYPE_CHECKING:
    from gateway.routing.table import Route

RESPONSE_CAPTURE = 512 * 1024


class ShadowTap:
    """Copies the primary exchange while it streams: the request body up to ``max_body``, the response up to
    ``RESPONSE_CAPTURE``. Cheap and infallible: it only appends to lists."""

    __slots__ = ("route", "spec", "target_backend", "primary_backend", "method", "raw_target", "headers",
                 "reverse", "req_chunks", "req_size", "req_complete", "too_large", "status", "resp_headers",
                 "resp_chunks", "resp_size", "resp_truncated", "resp_complete", "failed", "started", "trace_id",
                 "primary_ms", "trace", "__weakref__")

    def __init__(self, route: Route, spec: ShadowSpec, target: Backend, primary: Backend, method: str,
                 raw_target: str, headers: Headers, reverse: bool) -> None:
        self.route = route
        self.spec = spec
        self.target_backend = target
        self.primary_backend = primary
        self.method = method
        self.raw_target = raw_target
        self.headers = headers
        self.reverse = reverse
        self.req_chunks: list[bytes] = []
        self.req_size = 0
        self.req_complete = False
        self.too_large = False
        self.status = 0
        self.resp_headers: Headers = []
        self.resp_chunks: list[bytes] = []
        self.resp_size = 0
        self.resp_truncated = False
        self.resp_complete = False
        self.failed = False
        self.started = time.perf_counter()
        self.trace_id: str | None = None
        self.primary_ms: float | None = None
        self.trace: Any = None   # the request's span (gateway.tracing.RequestSpan): the shadow span's parent

    # proxy.Tap
    def request_chunk(self, chunk: bytes) -> None:
        if self.too_large:
            return
        self.req_size += len(chunk)
        if self.req_size > self.spec.max_body:
            self.too_large = True
            self.req_chunks = []
        else:
            self.req_chunks.append(chunk)

    def request_end(self, complete: bool) -> None:
        self.req_complete = complete

    def response_start(self, status: int, headers: Headers) -> None:
        self.status = status
        self.resp_headers = headers

    def response_chunk(self, chunk: bytes) -> None:
        if self.resp_truncated:
            return
        room = RESPONSE_CAPTURE - self.resp_size
        if len(chunk) > room:
            self.resp_chunks.append(chunk[:room])
            self.resp_size += room
            self.resp_truncated = True
        else:
            self.resp_chunks.append(chunk)
            self.resp_size += len(chunk)

    def response_end(self, complete: bool) -> None:
        self.resp_complete = complete

    def primary_failed(self) -> None:
        self.failed = True

    def request_body(self) -> bytes:
        return b"".join(self.req_chunks)

    def captured_primary(self) -> Captured:
        return Captured(self.status, tuple(self.resp_headers), b"".join(self.resp_chunks),
                        self.resp_truncated)
