"""Which side serves a request: the stage of its route, a rollback pin, and the canary's sticky split.

The split hashes a stable key (header or cookie value, else a random draw) with the route name into one of 10,000
buckets; a user whose bucket is below the weight goes to the extracted side. Because the bucket of a user never
changes, raising the weight only moves users from legacy to the new side, never back and forth, and every worker
process and restart agrees (a keyed BLAKE2 hash, not Python's per-process ``hash``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from aiohttp import web

from gateway.config.model import Backend, StickyKey
from gateway.routing.table import Route

BUCKETS = 10_000


class Decision:
    """Where one request goes. A plain slotted class rather than a frozen dataclass: one is made per request, and
    treated as immutable by convention."""

    __slots__ = ("backend", "side", "effective_stage", "shadow_to", "new_cookie")

    def __init__(self, backend: Backend, side: str, effective_stage: str, shadow_to: Backend | None = None,
                 new_cookie: tuple[str, str] | None = None) -> None:
        self.backend = backend                  # who answers the client
        self.side = side                        # "legacy" | "extracted"
        self.effective_stage = effective_stage  # the stage after pins
        self.shadow_to = shadow_to              # who gets a background copy, if anyone
        self.new_cookie = new_cookie            # a sticky cookie to set on the response


def bucket(route: str, key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, person=b"strangler",
                             salt=route.encode()[:16]).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def sticky_value(headers: Mapping[str, str], cookies: Mapping[str, str], key: StickyKey | None,
                 params: Mapping[str, str] | None = None) -> str | None:
    """The value a sticky split hashes: a header, a cookie or a path parameter of the request (None when absent).
    A path parameter makes the split sticky by entity (``/api/likes/{product_id}``): every write to one product
    lands on one side, so the mirrored copies of that entity's writes arrive in the order they were made."""
    if key is None:
        return None
    if key.kind == "header":
        return headers.get(key.name) or None
    if key.kind == "param":
        return (params or {}).get(key.name) or None
    return cookies.get(key.name) or None


def in_share(route: str, percent: float, value: str | None, rng: random.Random | None = None) -> bool:
    """Whether a request falls in the first ``percent`` of the split (sticky when ``value`` is given)."""
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    b = bucket(route, value) if value is not None else (rng or random).randrange(BUCKETS)
    return b < percent * (BUCKETS / 100.0)


def effective_stage(route: Route, pinned: bool) -> str:
    return "legacy" if pinned or route.to is None else route.stage


def decide(route: Route, pinned: bool, weight: float | None, value: str | None,
           new_cookie: tuple[str, str] | None = None) -> Decision:
    """The side for one request, from the route, its pin, the canary's live weight and the request's sticky value
    (None: a random draw). The request path, the shadow and ``explain`` all come through here."""
    stage = effective_stage(route, pinned)
    if stage == "legacy":
        return Decision(route.legacy, "legacy", stage)
    assert route.to is not None and route.spec is not None
    if stage == "shadow":
        return Decision(route.legacy, "legacy", stage, shadow_to=route.to)
    if stage == "extracted":
        return Decision(route.to, "extracted", stage, shadow_to=route.legacy if route.spec.reverse_shadow else None)
    assert weight is not None
    if in_share(route.name, weight, value):
        return Decision(route.to, "extracted", stage, new_cookie=new_cookie)
    return Decision(route.legacy, "legacy", stage, new_cookie=new_cookie)


def decide_request(route: Route, request: web.BaseRequest, pinned: bool, weight: float | None,
                   params: Mapping[str, str] | None = None) -> Decision:
    """``decide`` for a live request (``params``: what the route's path pattern captured, for a sticky path
    parameter); a cookie-sticky canary gives a user without the cookie a key now, so their next request lands on
    the same side and the share cannot creep."""
    canary = route.spec.canary if route.spec is not None and route.stage == "canary" and not pinned else None
    if canary is None or canary.sticky is None:
        return decide(route, pinned, weight, None)
    value = sticky_value(request.headers, request.cookies, canary.sticky, params)
    new_cookie = None
    if value is None and canary.sticky.kind == "cookie":
        value = f"{random.getrandbits(64):016x}"
        new_cookie = (canary.sticky.name, value)
    return decide(route, pinned, weight, value, new_cookie)
