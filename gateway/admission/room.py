"""``Rooms``: the waiting rooms of the routes that have an ``admission:`` block.

The public handler calls ``gate`` once for such a route, before the rollout decision (routes without one never
get here). It answers:

- ``None``: pass (an admitted visitor's ticket is genuine and current; or the room's store is down and the route
  fails open);
- a ``Set-Cookie`` header: pass, and hand this visitor the ticket of their admission (they were called, or nobody
  was waiting and the rate allowed one more);
- a response: wait (503 with ``Retry-After``, ``X-Queue-Position`` and the waiting ticket), or go away (full).

A ticket that is tampered with, expired, from another route or from an earlier line is worth nothing: its holder
is a new arrival. ``reloaded`` applies the file's settings to the lines (nobody loses a place) and writes
``admission_opened``, ``admission_paused``, ``admission_resumed``, ``admission_changed`` and
``admission_closed`` into the history.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admission.page import waiting_page, wants_html
from gateway.admission.stats import RoomStats
from gateway.admission.tickets import ADMITTED, WAITING, Refused, Signer, Ticket, cookie_name, cookie_value
from gateway.config.model import AdmissionSpec, Config
from gateway.errors import Queued, QueueFull, RoomUnavailable, WaitingRoom, problem_response
from gateway.stores.api import AdmissionQueue

log = logging.getLogger("strangler.admission")

Record = Callable[..., None]          # PinStore.record(kind, route, actor, reason, detail)
LOST = -1
LET_IN = 0
MAX_RETRY_AFTER = 20                  # seconds; a visitor further back still refreshes this often


def capacity(spec: AdmissionSpec) -> float:
    """Tokens saved up while nobody waits: a tenth of a second's admissions, at least one visitor."""
    return max(1.0, spec.rate / 10.0)


class Rooms:
    def __init__(self, queue: AdmissionQueue, record: Record, *, primary: bool = True) -> None:
        self.queue = queue
        self.record = record
        self.primary = primary        # only one process of a machine writes the history
        self.signer = Signer(queue.keys)
        self.specs: dict[str, AdmissionSpec] = {}
        self.stats: dict[str, RoomStats] = {}

    # -- the request path -------------------------------------------------------------------------------------------

    def gate(self, route: str, spec: AdmissionSpec, request: web.BaseRequest,
             trace_header: tuple[str, str] | None) -> web.Response | tuple[str, str] | None:
        now = time.time()
        refused = None
        ticket = None
        header = request.headers.get("Cookie")
        raw = cookie_value(header, cookie_name(route)) if header else None
        if raw:
            try:
                ticket = self.signer.verify(raw, route, (self.queue.epoch(route), self.queue.line_id(route)),
                                            now, max(spec.session, spec.grace))
            except Refused as exc:
                refused = f"refused: {exc}"
        if ticket is not None and ticket.kind == ADMITTED:
            return None
        queue = self.queue
        if not queue.available:
            return self._store_down(route, spec, trace_header)
        if ticket is not None:
            place = queue.poll(route, ticket.number)
            if place == LET_IN:
                return self._let_in(route, spec, now, ticket)
            if place > 0:
                # The same ticket keeps the place; a fresh one only once half its grace is used up, so a
                # visitor polling often does not cost a signature (and a cookie) on every answer.
                renew = ticket.expires - now < spec.grace / 2
                return self._hold(request, route, spec, now, ticket.number, ticket.joined, place, None,
                                  trace_header, renew)
            refused = "lost: it was not used for longer than the grace period"
        if queue.enter(route):
            return self._let_in(route, spec, now, None)
        joined = queue.join(route)
        if joined is None:
            return self._full(request, route, spec, trace_header)
        number, position = joined
        return self._hold(request, route, spec, now, number, int(now), position, refused, trace_header)

    def _let_in(self, route: str, spec: AdmissionSpec, now: float, ticket: Ticket | None) -> tuple[str, str]:
        stats = self.stats.get(route)
        if stats is not None:
            stats.let_in(now, None if ticket is None else max(0.0, now - ticket.joined))
        session = Ticket(ADMITTED, route, self.queue.epoch(route), ticket.number if ticket else 0,
                         ticket.joined if ticket else int(now), int(now + spec.session))
        return _set_cookie(route, self.signer.sign(session), spec.session)

    def _hold(self, request: web.BaseRequest, route: str, spec: AdmissionSpec, now: float, number: int,
              joined: int, position: int, refused: str | None, trace_header: tuple[str, str] | None,
              renew: bool = True) -> web.Response:
        eta = self.queue.eta(route, position)
        eta_s = None if math.isinf(eta) else round(eta, 1)
        retry = _retry_after(eta, spec.grace)
        wait = "unknown while admission is paused" if eta_s is None else f"about {eta_s:g} s"
        error = Queued(f"route {route} lets in {rate_text(spec.rate)} new visitors; you are number {position} in "
                       f"line (estimated wait {wait}). Come back after Retry-After with the cookie to keep "
                       "your place.", position=position, eta_s=eta_s, retry_after=retry, ticket=refused)
        resp = self._respond(request, error, trace_header, position, eta_s)
        resp.headers["X-Queue-Position"] = str(position)
        if renew:
            ticket = Ticket(WAITING, route, self.queue.line_id(route), number, joined, int(now + spec.grace))
            resp.headers.add(*_set_cookie(route, self.signer.sign(ticket), spec.grace))
        return resp

    def _full(self, request: web.BaseRequest, route: str, spec: AdmissionSpec,
              trace_header: tuple[str, str] | None) -> web.Response:
        stats = self.stats.get(route)
        if stats is not None:
            stats.full += 1
        waiting = self.queue.waiting(route)
        error = QueueFull(f"route {route} has {waiting} visitors waiting, its limit; try again later",
                          retry_after=_retry_after(self.queue.eta(route, waiting), spec.grace))
        return self._respond(request, error, trace_header, None, None)

    def _store_down(self, route: str, spec: AdmissionSpec, trace_header: tuple[str, str] | None
                    ) -> web.Response | None:
        stats = self.stats.get(route)
        if stats is not None:
            stats.store_down += 1
        if spec.on_store_down == "open":
            return None
        error = RoomUnavailable(f"the waiting room of route {route} cannot reach its store "
                                f"({self.queue.problem or 'unavailable'}) and is set to fail closed",
                                retry_after=5)
        return problem_response(error, trace_header=trace_header)

    @staticmethod
    def _respond(request: web.BaseRequest, error: WaitingRoom, trace_header: tuple[str, str] | None,
                 position: int | None, eta_s: float | None) -> web.Response:
        if wants_html(request):
            resp = web.Response(status=error.status, text=waiting_page(error, position, eta_s),
                                content_type="text/html", headers=[trace_header] if trace_header else None)
            resp.headers["Retry-After"] = str(error.retry_after)
        else:
            resp = problem_response(error, instance=request.path, trace_header=trace_header)
        resp.headers["Cache-Control"] = "no-store"   # a shared cache must never hand one visitor's place on
        return resp

    # -- settings from routes.yaml ----------------------------------------------------------------------------------

    def reloaded(self, old: Config | None, new: Config, actor: str) -> None:
        """Open, retune, pause or close the lines as the new file says; nobody loses a place."""
        before = {r.name: r.admission for r in old.routes if r.admission} if old else {}
        after = {r.name: r.admission for r in new.routes if r.admission}
        for name, spec in after.items():
            created = self.queue.configure(name, spec.rate, capacity(spec), spec.queue, spec.grace, spec.paused)
            self.stats.setdefault(name, RoomStats())
            previous = before.get(name)
            if previous is None:
                if created or old is not None:
                    self._history("admission_opened", name, actor, f"admitting {rate_text(spec.rate)}",
                                  _fields(spec))
            elif previous != spec:
                self._changed(name, previous, spec, actor)
        for name in before.keys() - after.keys():
            self.queue.remove(name)
            self.stats.pop(name, None)
            self._history("admission_closed", name, actor, "admission removed from routes.yaml", {})
        # The file is the truth at start-up too: lines of routes that no longer have a room are dropped.
        for name in set(self.queue.routes()) - after.keys():
            self.queue.remove(name)
        self.specs = after

    def _changed(self, name: str, old: AdmissionSpec, new: AdmissionSpec, actor: str) -> None:
        if old.paused != new.paused:
            kind = "admission_paused" if new.paused else "admission_resumed"
            self._history(kind, name, actor, "paused: nobody new is let in" if new.paused else
                          f"admitting {rate_text(new.rate)} again", {})
        fields = {k: [a, b] for k, a in _fields(old).items() if k != "paused" and (b := _fields(new)[k]) != a}
        if fields:
            self._history("admission_changed", name, actor,
                          ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in fields.items()), {"fields": fields})

    def _history(self, kind: str, route: str, actor: str, reason: str, detail: dict[str, Any]) -> None:
        log.info("%s: %s %s", route, kind, reason, extra={"event": kind, "route": route})
        if self.primary:
            self.record(kind, route, actor, reason, detail)

    # -- what the admin surfaces show -------------------------------------------------------------------------------

    def view(self, route: str) -> dict[str, Any] | None:
        spec = self.specs.get(route)
        if spec is None:
            return None
        stats = self.stats.get(route) or RoomStats()
        return {"rate": spec.rate, "rate_text": rate_text(spec.rate), "session_s": spec.session, "queue_limit": spec.queue, "grace_s": spec.grace,
                "paused": spec.paused, "on_store_down": spec.on_store_down,
                "waiting": self.queue.waiting(route), "lost": self.queue.lost(route),
                "store": "ok" if self.queue.available else f"down: {self.queue.problem}",
                **stats.summary(time.time())}


def _fields(spec: AdmissionSpec) -> dict[str, Any]:
    return {"rate": spec.rate, "session": spec.session, "queue": spec.queue, "grace": spec.grace,
            "paused": spec.paused, "on_store_down": spec.on_store_down}


def rate_text(rate: float) -> str:
    """``100/s``, or per minute or hour when that reads better (``1/m``, not ``0.0166667/s``)."""
    for unit, scale in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if rate * scale >= 1 or unit == "h":
            return f"{round(rate * scale, 2):g}/{unit}"
    return f"{rate:g}/s"


def _retry_after(eta: float, grace: float) -> int:
    """Come back when your turn should come, but at least every second and early enough to keep the place."""
    ceiling = max(1, min(MAX_RETRY_AFTER, int(grace / 3)))
    if math.isinf(eta):
        return ceiling
    return max(1, min(ceiling, math.ceil(eta)))


def _set_cookie(route: str, value: str, max_age: float) -> tuple[str, str]:
    return ("Set-Cookie", f"{cookie_name(route)}={value}; Path=/; Max-Age={int(max_age)}; HttpOnly; SameSite=Lax")
