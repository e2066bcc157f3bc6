"""The waiting room's ticket: a cookie the gateway signs, so a visitor's place (or admission) needs no lookup.

    1:<kind>:<route>:<epoch>:<number>:<joined>:<expires>:<kid>:<mac>

``kind`` is ``w`` (waiting: holds a number in the route's line) or ``a`` (admitted: passes until ``expires``).
``epoch`` names the line the number belongs to, so a number from a line that was closed and reopened is worth
nothing. ``mac`` is HMAC-SHA256 over everything before it (RFC 2104), truncated to 128 bits as RFC 2104 section 5
allows, under key ``kid`` from the store; after a rotation the old key still verifies for ``key_grace`` seconds, so
nobody loses a place or a session to it. Route names are ``[A-Za-z0-9_.-]``, so ``:`` never occurs inside a field,
and every character is a valid cookie octet (RFC 6265 section 4.1.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from gateway.stores.admission import SigningKey

WAITING, ADMITTED = "w", "a"
COOKIE_PREFIX = "strangler-room-"
MAC_BYTES = 16


def cookie_name(route: str) -> str:
    return COOKIE_PREFIX + route


@dataclass(frozen=True, slots=True)
class Ticket:
    kind: str        # WAITING | ADMITTED
    route: str
    epoch: str
    number: int      # the place in line (0 for a visitor let in without queueing)
    joined: int      # unix seconds: when the visitor first arrived (the wait is measured from here)
    expires: int     # unix seconds


class Refused(Exception):
    """A ticket that is worth nothing; the message says why (shown to the visitor's client)."""


class Signer:
    def __init__(self, keys: Callable[[], list[SigningKey]]) -> None:
        self._keys = keys

    def sign(self, t: Ticket) -> str:
        key = self._keys()[0]
        payload = f"1:{t.kind}:{t.route}:{t.epoch}:{t.number}:{t.joined}:{t.expires}:{key.kid}"
        return f"{payload}:{_mac(key.secret, payload)}"

    def verify(self, value: str, route: str, epoch: str, now: float, key_grace: float) -> Ticket:
        """The ticket in ``value`` if it is genuine, current and for this route's line; else ``Refused``."""
        payload, _, mac = value.rpartition(":")
        parts = payload.split(":")
        if len(parts) != 8 or parts[0] != "1" or parts[1] not in (WAITING, ADMITTED):
            raise Refused("malformed")
        try:
            number, joined, expires, kid = int(parts[4]), int(parts[5]), int(parts[6]), int(parts[7])
        except ValueError:
            raise Refused("malformed") from None
        key = next((k for k in self._keys() if k.kid == kid), None)
        if key is None or (key.retired is not None and now > key.retired + key_grace):
            raise Refused("signed with a key that is no longer accepted")
        if not hmac.compare_digest(mac, _mac(key.secret, payload)):
            raise Refused("bad signature")
        if parts[2] != route:
            raise Refused(f"issued for route {parts[2]!r}")
        if parts[3] != epoch:
            raise Refused("issued for an earlier line of this route")
        if expires < now:
            raise Refused("expired")
        return Ticket(parts[1], route, epoch, number, joined, expires)


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
