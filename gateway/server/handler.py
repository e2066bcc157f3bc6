"""The public listener: one handler that takes a request from the wire to a backend and back.

    normalise path -> match route -> decide side (stage, pin, canary) -> forward (streaming) -> shadow copy (off
    the hot path) -> record stats

Everything per generation (route table, backends) comes from the ``Table`` the handler reads once at the start of
the request, so a reload in the middle of a request changes nothing for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.admission.room import Rooms
from gateway.config.model import Backend
from gateway.errors import (
    BadRequest,
    CircuitOpen,
    ClientRequestError,
    GatewayError,
    PayloadTooLarge,
    Unavailable,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamRetryableStatus,
    VersionNotSupported,
    problem_response,
)
from gateway.proxy import forward as proxy
from gateway.proxy.headers import upstream_request_headers
from gateway.proxy.protect import Protection
from gateway.proxy.reply import RelayedReply
from gateway.proxy.upstream import Upstreams
from gateway.rollout.controller import Rollout
from gateway.routing.paths import PathError, normalize_path
from gateway.routing.table import TableRef
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.sync.capture import Mirror
from gateway.telemetry.recorder import Recorder
from gateway.telemetry.tracing import TraceContext
from observability.tracing import TRACEPARENT

if TYPE_CHECKING:
    from gateway.routing.table import Route

log = logging.getLogger("strangler.gateway")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({502, 503})
HTTP_VERSIONS = frozenset({(1, 1), (1, 0)})


def _retryable(exc: GatewayError, request: web.BaseRequest) -> bool:
    """Whether a failed attempt may be sent again to legacy: the new backend refused (it never saw the request),
    its circuit is open, it is over its limit, it reset before answering, or it answered 502/503 -- and in the
    last cases only when there is no request body (a streamed body cannot be sent twice)."""
    if exc.retryable or isinstance(exc, Unavailable):
        return True
    if isinstance(exc, UpstreamProtocolError | UpstreamRetryableStatus | UpstreamConnectError):
        return not request.can_read_body
    return False


class PublicHandler:
    def __init__(self, tables: TableRef, rollout: Rollout, shadow: ShadowDispatcher, recorder: Recorder,
                 upstreams: Upstreams, protection: Protection, rooms: Rooms | None = None,
                 sync: Mirror | None = None) -> None:
        self.tables = tables
        self.rooms = rooms
        self.sync = sync
        self.rollout = rollout
        self.shadow = shadow
        self.recorder = recorder
        self.upstreams = upstreams
        self.protection = protection

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse | RelayedReply:
        started = time.perf_counter()
        table = self.tables.current
        cfg = table.config
        limits = cfg.limits
        recorder = self.recorder
        span = recorder.start(request, cfg)
        trace_header = recorder.trace_header(span, cfg)
        raw = request.raw_path
        refusal = self._check(request, limits.max_request_body)
        if refusal is None:
            path, _, query = raw.partition("?")
            try:
                norm = normalize_path(path, limits.path_parameters)
            except PathError as exc:
                refusal = BadRequest(f"invalid request path: {exc}")
        if refusal is not None:
            recorder.refused(span, request, refusal, time.perf_counter() - started)
            return problem_response(refusal, instance=raw[:200], trace_header=trace_header)
        if norm != path:
            # The backend sees exactly the path the route decision was made on.
            raw = f"{norm}?{query}" if "?" in raw else norm
        route, params = table.resolve(request.method, norm, request.headers)
        spec = route.spec
        extra = [trace_header] if trace_header is not None else []
        if spec is not None and spec.admission is not None and self.rooms is not None:
            gate = self.rooms.gate(route.name, spec.admission, request, trace_header)
            if isinstance(gate, web.Response):
                recorder.held(span, route, request, gate.status, time.perf_counter() - started)
                return gate
            if gate is not None:   # a new ticket for the visitor
                extra.append(gate)
        decision = self.rollout.decide(route, request, params)
        if decision.new_cookie is not None:
            extra.append(_cookie_header(decision.new_cookie))
        outcome = proxy.Outcome(decision.backend.name)
        headers = _upstream_headers(request, limits.underscores_in_headers)
        mirrored = spec is not None and spec.sync is not None and self.sync is not None
        if mirrored:
            headers = list(headers)   # the mirror adds its fields to this request's (and not to the next's)
        shadow = self.shadow.begin(route, decision, request, raw, headers) if decision.shadow_to else None
        limit = limits.max_request_body
        try:
            # A route with `sync:` mirrors completed writes to the other side (gateway.sync); others skip this.
            sync = (self.sync.begin(route, request, raw, headers, shadow, params)  # type: ignore[union-attr]
                    if mirrored else None)
            # With `on_error: fallback` the new side's failures may be retried on legacy; without, one attempt
            # (awaited directly: one coroutine less per request).
            send = (self._with_fallback if decision.side == "extracted" and self._may_fall_back(request, route)
                    else self._attempt)
            if sync is None:
                resp = await send(request, span, route, decision.backend, raw, headers, outcome, shadow, limit,
                                  extra)
            else:
                resp = await send(request, span, route, decision.backend, raw, headers, outcome, sync,
                                  sync.limit(limit), extra)
                await self.sync.commit(sync, outcome, span.trace_hex if span.sampled else None)  # type: ignore[union-attr]
        except GatewayError as exc:
            proxy.mark_error(outcome, exc)
            if shadow is not None:
                shadow.primary_failed()
            resp = problem_response(exc, instance=path, trace_header=trace_header)
        finally:
            recorder.request_done(span, route, decision, request, outcome, time.perf_counter() - started)
            if decision.side == "extracted" or outcome.fell_back:
                self.rollout.observed(route)
        if shadow is not None:
            self.shadow.submit(shadow, outcome)
        return resp

    async def _with_fallback(self, request: web.BaseRequest, span: TraceContext, route: Route, backend: Backend,
                             raw: str, headers: list[tuple[str, str]], outcome: proxy.Outcome,
                             tap: proxy.Tap | None, limit: int | None, extra: list[tuple[str, str]]
                             ) -> web.StreamResponse | RelayedReply:
        """``on_error: fallback``: a failed attempt on the new side of an idempotent request is retried once on
        legacy (and still counted against the new side)."""
        try:
            return await self._attempt(request, span, route, backend, raw, headers, outcome, tap, limit, extra,
                                       retry_statuses=RETRY_STATUSES)
        except GatewayError as exc:
            if not _retryable(exc, request):
                raise
            self.recorder.attempt_failed(route, "extracted")
            outcome.backend = route.legacy.name
            outcome.fell_back = True
            return await self._attempt(request, span, route, route.legacy, raw, headers, outcome, tap, limit,
                                       extra)

    def _attempt(self, request: web.BaseRequest, span: TraceContext, route: Route, backend: Backend, raw: str,
                 headers: list[tuple[str, str]], outcome: proxy.Outcome, tap: proxy.Tap | None, limit: int | None,
                 extra: list[tuple[str, str]], retry_statuses: frozenset[int] = frozenset()
                 ) -> Awaitable[web.StreamResponse | RelayedReply]:
        """One attempt on ``backend``, to be awaited. Without a circuit, a concurrency limit, a span to close or an
        upgrade there is nothing to do after the exchange, so the caller awaits the forward itself: a coroutine
        layer costs about a microsecond per request."""
        protection = self.protection
        if not (span.sampled or protection.circuits or protection.limits or proxy.is_upgrade(request)):
            return proxy.forward(request, backend, self.upstreams.pool(backend), raw, headers, outcome, tap=tap,
                                 body_limit=limit, extra_response_headers=extra, retry_statuses=retry_statuses,
                                 last=(TRACEPARENT, span.attempt(backend)))
        return self._guarded_attempt(request, span, backend, raw, headers, outcome, tap, limit, extra,
                                     retry_statuses)

    async def _guarded_attempt(self, request: web.BaseRequest, span: TraceContext, backend: Backend, raw: str,
                               headers: list[tuple[str, str]], outcome: proxy.Outcome, tap: proxy.Tap | None,
                               limit: int | None, extra: list[tuple[str, str]], retry_statuses: frozenset[int]
                               ) -> web.StreamResponse | RelayedReply:
        protection = self.protection
        circuit = protection.circuits.get(backend.name)
        if circuit is not None and not circuit.allow():
            raise CircuitOpen(f"{backend.name}: circuit open after {circuit.failures} consecutive failures; "
                              f"retrying in {circuit.spec.cooldown:g}s", backend=backend.name, retryable=True)
        slot = protection.limits.get(backend.name)
        if slot is not None:
            await slot.acquire()
        # A CLIENT span per attempt when sampled; the backend continues the trace under it.
        traceparent = (TRACEPARENT, span.attempt(backend))
        try:
            if proxy.is_upgrade(request):
                resp = await proxy.forward_websocket(request, backend, self.upstreams.ws_session(backend), raw,
                                                     [*headers, traceparent], outcome)
            else:
                resp = await proxy.forward(request, backend, self.upstreams.pool(backend), raw, headers, outcome,
                                           tap=tap, body_limit=limit, extra_response_headers=extra,
                                           retry_statuses=retry_statuses, last=traceparent)
        except GatewayError as exc:
            span.attempt_end(exc.status, exc)
            if circuit is not None and not isinstance(exc, ClientRequestError):
                circuit.failure()
            raise
        finally:
            if slot is not None:
                slot.release()
        span.attempt_end(outcome.status, outcome.error)
        if circuit is not None:
            if outcome.status >= 500 or outcome.aborted:
                circuit.failure()
            else:
                circuit.success()
        return resp

    @staticmethod
    def _may_fall_back(request: web.BaseRequest, route: Route) -> bool:
        return (route.spec is not None and route.spec.on_error == "fallback" and request.method in IDEMPOTENT
                and not proxy.is_upgrade(request))

    @staticmethod
    def _check(request: web.BaseRequest, limit: int | None) -> GatewayError | None:
        """What refuses a request before any route is chosen (the path is checked by the caller)."""
        if request.version not in HTTP_VERSIONS:
            return VersionNotSupported(f"HTTP/{request.version[0]}.{request.version[1]} is not spoken here; "
                                       "use HTTP/1.1")
        if limit is not None and (request.content_length or 0) > limit:
            return PayloadTooLarge(f"request body exceeds {limit} bytes")
        return None


def _upstream_headers(request: web.BaseRequest, underscores: str) -> list[tuple[str, str]]:
    """The header fields the backend gets (``proxy.headers.upstream_request_headers``). A keep-alive client
    usually sends the very same fields on every request; the connection (``server.wire``) keeps the last request's
    fields and their rewrite, so a repeat costs one comparison of the raw fields. The rewrite depends only on the
    fields, the setting and the connection (client address, scheme), so a repeat gets the same list, which is
    never changed in place (whoever adds to it copies it first)."""
    protocol = request.protocol
    raw = request.raw_headers
    last = protocol.last_forwarded  # type: ignore[attr-defined]
    if last is not None and last[1] == underscores and last[0] == raw:
        return last[2]  # type: ignore[no-any-return]
    headers = upstream_request_headers(raw, peer=protocol.peer, scheme=request.scheme,  # type: ignore[attr-defined]
                                       keep_upgrade=False, underscores=underscores)
    protocol.last_forwarded = (raw, underscores, headers)  # type: ignore[attr-defined]
    return headers


def _cookie_header(cookie: tuple[str, str]) -> tuple[str, str]:
    name, value = cookie
    return ("Set-Cookie", f"{name}={value}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly")
