"""Who may talk to the admin listener: requests must name it in ``Host``, and with ``admin.read_token`` reads need
the admin token as well as changes.

DNS rebinding: a web page the operator visits at ``http://evil.example:9901/`` can have its name re-resolved to
127.0.0.1, and the browser then lets that page read the admin API's answers (recorded request and response bodies,
traces) as if they were its own origin's. The browser still sends ``Host: evil.example:9901``, so answering only
Host values that name this listener closes the hole (the fix the Chromium and Kubernetes projects recommend for
local services). Accepted: the listener's own address and the address the connection arrived at, ``localhost``,
``127.0.0.1`` and ``[::1]``, each with the listener's port; and the names in ``admin.hosts`` (a name without a port
matches it with any port, for a proxy in front). Anything else is answered 421 Misdirected Request (RFC 9110
§15.5.20): a request for another authority.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import MisdirectedRequest, problem, problem_response
from gateway.routing.table import TableRef
from gateway.server.screen import split_host

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Always open: health checks come from load balancers and orchestrators that know an address, not a token.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def names_listener(host_value: str, listener: tuple[str, int], arrived_at: str | None,
                   configured: tuple[str, ...]) -> bool:
    """Whether a ``Host`` value names the admin listener bound at ``listener`` (host, port), reached through the
    local address ``arrived_at``, or one of the ``configured`` names."""
    parsed = split_host(host_value)
    if parsed is None or not parsed[0]:
        return False
    host, port = parsed
    bound_host, bound_port = listener
    if port is None:
        port = 80          # RFC 9110 §4.2.1: http's default port
    own = {bound_host.lower().strip("[]"), *LOOPBACK_NAMES}
    if arrived_at:
        own.add(arrived_at.lower())
    if host in own and port == bound_port:
        return True
    for entry in configured:
        named = split_host(entry)
        if named is not None and named[0] == host and (named[1] is None or named[1] == port):
            return True
    return False


def admin_access(tables: TableRef, listener_address: Callable[[], tuple[str, int]],
                 token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The admin app's first middleware: 421 for a Host not naming the listener, and with ``admin.read_token``
    401 for a read without the token (changes are checked by the app's own token middleware)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = tables.current.config
        listener = listener_address()
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        arrived_at = str(sockname[0]) if isinstance(sockname, tuple | list) and sockname else None
        host = request.headers.get("Host", "")
        if not names_listener(host, listener, arrived_at, config.admin_hosts):
            return problem_response(MisdirectedRequest(
                f"this admin listener does not answer for Host {host[:100]!r}; add the name to admin.hosts in "
                "routes.yaml if it is meant to reach it"))
        if (config.admin_read_token and request.method in READS and request.path not in OPEN_PATHS
                and not request.path.startswith("/console/") and request.path != "/"
                and not has_token(request, token)):
            return problem(401, "Unauthorized", "admin.read_token is set: reads need `Authorization: Bearer "
                           "<token>` too", "unauthorized")
        return await handler(request)

    return middleware


def has_token(request: web.BaseRequest, expected: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())
