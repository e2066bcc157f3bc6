"""The public listener: one handler that takes a request from the wire to a backend and back.

    normalise path -> match route -> decide side (stage, pin, canary) -> forward (streaming) -> shadow copy (off
    the hot path) -> record stats

Everything per generation (route table, backends) comes from the ``Table`` the handler reads once at the start of
the request, so a reload in the middle of a request changes nothing for it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from gateway import proxy, rollout
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge, problem_response
from gateway.headers import upstream_request_headers
from gateway.paths import PathError, normalize_path, split_target

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("strangler.gateway")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class PublicHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        table = self.gw.table
        raw = request.raw_path
        try:
            path, query = split_target(raw)
            norm = normalize_path(path)
        except PathError as exc:
            return self._refuse(BadRequest(f"invalid request path: {exc}"), raw)
        if norm != path:
            # The backend sees exactly the path the route decision was made on.
            raw = norm if query is None else f"{norm}?{query}"
        route = table.resolve(request.method, norm, request.headers)
        pin = self.gw.state.pins.get(route.name) if not route.is_fallback else None
        decision = rollout.decide(route, request, pinned=pin is not None, weight=self.gw.weight_for(route))
        outcome = proxy.Outcome(decision.backend.name)
        limit = table.config.limits.max_request_body
        if limit is not None and (request.content_length or 0) > limit:
            return self._refuse(PayloadTooLarge(f"request body exceeds {limit} bytes"), raw)

        headers = upstream_request_headers(request.raw_headers, peer=_peer(request), scheme=request.scheme,
                                           keep_upgrade=False)
        shadow = self.gw.shadow.begin(route, decision, request, raw, headers) if decision.shadow_to else None
        extra = _cookie_header(decision)
        try:
            resp = await self._forward(request, decision, raw, headers, outcome, shadow, limit, extra)
        except GatewayError as exc:
            proxy.mark_error(outcome, exc)
            if shadow is not None:
                shadow.primary_failed()
            resp = problem_response(exc, instance=path)
        finally:
            elapsed = time.perf_counter() - started
            self.gw.observe(route, decision, request, outcome, elapsed)
        if shadow is not None:
            self.gw.shadow.submit(shadow, outcome)
        return resp

    async def _forward(self, request: web.BaseRequest, decision: rollout.Decision, raw: str,
                       headers: list[tuple[str, str]], outcome: proxy.Outcome, shadow: proxy.Tap | None,
                       limit: int | None, extra: list[tuple[str, str]]) -> web.StreamResponse:
        backend = decision.backend
        session = self.gw.upstreams.session(backend)
        if proxy.is_upgrade(request):
            return await proxy.forward_websocket(request, backend, session, raw, headers, outcome)
        return await proxy.forward(request, backend, session, raw, headers, outcome, tap=shadow, body_limit=limit,
                                   extra_response_headers=extra)

    def _refuse(self, error: GatewayError, instance: str) -> web.Response:
        return problem_response(error, instance=instance[:200])


def _peer(request: web.BaseRequest) -> str | None:
    transport = request.transport
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return None


def _cookie_header(decision: rollout.Decision) -> list[tuple[str, str]]:
    if decision.new_cookie is None:
        return []
    name, value = decision.new_cookie
    return [("Set-Cookie", f"{name}={value}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly")]
