"""The waiting room's ticket: a cookie the gateway signs, so a visitor's place (or admission) needs no lookup.

    1:<kind>:<route>:<epoch>:<number>:<joined>:<expires>:<kid>:<mac>

``kind`` is ``w`` (waiting: holds a number in the route's line) or ``a`` (admitted: passes until ``expires``).
``epoch`` names the room for an admitted ticket and the line its number belongs to for a waiting one, so a
ticket from a room that was closed and opened again (or a number from another process's line) is worth nothing. ``mac`` is HMAC-SHA256 over everything before it (RFC 2104), truncated to 128 bits as RFC 2104 section 5
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


CACHE_SIZE = 1 << 16


class Signer:
    """Signs and verifies tickets. Verified tickets are remembered (by their exact text) until the cache fills
    or the keys change, so a visitor who keeps sending the same ticket pays for the HMAC once; only genuine
    tickets are remembered, so forged ones cannot crowd it."""

    def __init__(self, keys: Callable[[], list[SigningKey]]) -> None:
        self._keys = keys
        self._seen: dict[str, tuple[Ticket, float]] = {}   # text -> (ticket, good until)
        self._keys_seen: list[SigningKey] | None = None

    def sign(self, t: Ticket) -> str:
        key = self._keys()[0]
        payload = f"1:{t.kind}:{t.route}:{t.epoch}:{t.number}:{t.joined}:{t.expires}:{key.kid}"
        return f"{payload}:{_mac(key.secret, payload)}"

    def verify(self, value: str, route: str, epochs: tuple[str, str], now: float, key_grace: float) -> Ticket:
        """The ticket in ``value`` if it is genuine, current and for this route's room (``epochs``: what an
        admitted ticket and a waiting ticket must name); else ``Refused``."""
        keys = self._keys()
        if keys is not self._keys_seen:            # rotated (or reloaded): verify everything afresh
            self._seen.clear()
            self._keys_seen = keys
        known = self._seen.get(value)
        if known is not None and known[1] >= now and known[0].route == route and \
                known[0].epoch == epochs[known[0].kind == WAITING]:
            return known[0]
        ticket, until = self._verify(value, route, epochs, now, key_grace, keys)
        if len(self._seen) >= CACHE_SIZE:
            self._seen.clear()
        self._seen[value] = (ticket, until)
        return ticket

    def _verify(self, value: str, route: str, epochs: tuple[str, str], now: float, key_grace: float,
                keys: list[SigningKey]) -> tuple[Ticket, float]:
        payload, _, mac = value.rpartition(":")
        parts = payload.split(":")
        if len(parts) != 8 or parts[0] != "1" or parts[1] not in (WAITING, ADMITTED):
            raise Refused("malformed")
        try:
            number, joined, expires, kid = int(parts[4]), int(parts[5]), int(parts[6]), int(parts[7])
        except ValueError:
            raise Refused("malformed") from None
        key = next((k for k in keys if k.kid == kid), None)
        if key is None or (key.retired is not None and now > key.retired + key_grace):
            raise Refused("signed with a key that is no longer accepted")
        if not hmac.compare_digest(mac, _mac(key.secret, payload)):
            raise Refused("bad signature")
        if parts[2] != route:
            raise Refused(f"issued for route {parts[2]!r}")
        epoch = epochs[parts[1] == WAITING]
        if parts[3] != epoch:
            same_room = parts[3].split(".")[0] == epochs[0]
            raise Refused("issued by another worker's line" if same_room else "issued for an earlier line of this route")
        if expires < now:
            raise Refused("expired")
        until = float(expires) if key.retired is None else min(float(expires), key.retired + key_grace)
        return Ticket(parts[1], route, epoch, number, joined, expires), until


def cookie_value(header: str, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header (RFC 6265 section 5.4: ``a=1; b=2``),
    without building a dictionary of every cookie the visitor sends."""
    start = 0
    while True:
        at = header.find(name, start)
        if at < 0:
            return None
        end = at + len(name)
        if (at == 0 or header[at - 1] in " ;") and header.startswith("=", end):
            stop = header.find(";", end)
            return header[end + 1:stop if stop >= 0 else None].strip().strip('"')
        start = end


def _mac(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
