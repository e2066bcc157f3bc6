"""Header rewriting between client, gateway and backends.

Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection: they are dropped, together with every header the
``Connection`` field names. The gateway's own control headers (``X-Shadow``, ``X-Strangler-Sync``) are dropped from inbound requests so
that a client cannot forge them. Forwarding headers are appended or set as PRODUCT.md says.

Names with an underscore are dropped too (routes.yaml ``limits.underscores_in_headers: drop``, the default, as
nginx's ``underscores_in_headers off``): CGI-style backends (PHP, WSGI, Rack) turn both ``X-User`` and ``X_User``
into ``HTTP_X_USER``, so an underscore spelling can pose as a header the gateway set or removed. With ``pass`` they
are forwarded, except spellings of the headers above, which never are.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade",
})

# Headers only the gateway may set on an upstream request. ``traceparent`` is set per attempt, naming the
# gateway's span as the parent (the client's, if valid, is continued by the gateway's server span).
# ``Expect: 100-continue`` is answered by the gateway itself (it streams the body), so it is not forwarded.
# ``Forwarded`` (RFC 7239) from a client would contradict the X-Forwarded-* the gateway sets: dropped as well.
CONTROL = frozenset({"expect", "forwarded", "x-shadow", "x-forwarded-proto", "x-forwarded-host", "traceparent",
                     "x-strangler-sync"})

SHADOW_HEADER = "X-Shadow"
SYNC_HEADER = "X-Strangler-Sync"   # a mirrored write (gateway.sync): real, but not to be mirrored again
VIA = "1.1 strangler"

Headers = list[tuple[str, str]]


class Fields(list[tuple[str, str]]):
    """An upstream request's header fields, never changed once built (whoever adds to them copies them first), so
    the pool renders them once however many requests send them (``pool._request_head``): a keep-alive client's
    repeated fields get the same ``Fields`` (``server.handler``)."""

    __slots__ = ("rendered",)

    def __init__(self, fields: Headers) -> None:
        super().__init__(fields)
        # The "Name: value\r\n" lines, and whether Host and Content-Length are among them (pool._request_head)
        self.rendered: tuple[str, bool, bool] | None = None


def _connection_tokens(raw: Iterable[tuple[bytes, bytes]]) -> frozenset[str]:
    tokens: set[str] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip())
    return frozenset(tokens)


# Every name the request loop must look at twice; anything else is copied as it came (one set lookup).
_SPECIAL = HOP_BY_HOP | CONTROL | {"x-forwarded-for", "via", "host"}
# Underscore spellings of these are never forwarded, whatever ``underscores`` says.
_GUARDED = _SPECIAL | {"content-length"}


def upstream_request_headers(raw: Iterable[tuple[bytes, bytes]], *, peer: str | None, scheme: str,
                             keep_upgrade: bool = False, underscores: str = "drop") -> Fields:
    """Headers for the upstream request: original order and case, hop-by-hop and control headers removed,
    ``X-Forwarded-*`` and ``Via`` added. ``Host`` is kept as the client sent it. Names with '_' are forwarded
    only when ``underscores`` is ``pass`` (``refuse`` never gets here: the listener answered 400)."""
    raw = tuple(raw)
    named = _connection_tokens(raw)
    out: Headers = []
    forwarded_for: list[str] = []
    via: list[str] = []
    host = ""
    for bname, bvalue in raw:
        name = bname.decode("latin-1")
        lname = name.lower()
        if lname not in _SPECIAL and lname not in named and "_" not in lname:
            out.append((name, bvalue.decode("latin-1")))
            continue
        value = bvalue.decode("latin-1")
        if lname == "x-forwarded-for":
            forwarded_for.append(value)
            continue
        if lname == "via":
            via.append(value)
            continue
        if "_" in lname and (underscores != "pass" or lname.replace("_", "-") in _GUARDED):
            continue   # CGI-style servers read X_Shadow as X-Shadow: the same header, spelled otherwise
        if lname in HOP_BY_HOP or lname in named or lname in CONTROL:
            if keep_upgrade and lname in ("upgrade", "connection"):
                out.append((name, value))
            continue
        if lname == "host":
            host = value
        out.append((name, value))
    if peer:
        forwarded_for.append(peer)
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    out.append(("Via", ", ".join(via) + ", " + VIA if via else VIA))
    return Fields(out)


_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
_PLAIN_CONNECTION = frozenset({b"", b"keep-alive", b"close"})   # Connection values that name no other field


def backend_fields(raw: list[tuple[bytes, bytes]], length: int,
                   named: frozenset[bytes] = frozenset()) -> tuple[bytes, bool] | None:
    """The backend's part of the client's header block for a complete body of ``length`` bytes, as bytes
    (``gateway.proxy.reply``): its fields in order less hop-by-hop ones and those its ``Connection`` names, and
    ``Content-Length`` when the backend framed the body otherwise (chunked); and whether ``Date`` is missing. None
    when a value holds a CR or LF (it could not be relayed as one field; the caller lets aiohttp refuse it)."""
    parts = []
    connection = b""
    has_length = has_date = False
    for name, value in raw:
        lname = name.lower()
        if lname in _HOP_BY_HOP_BYTES:
            if lname == b"connection":
                connection += b"," + value
            continue
        if lname in named:
            continue
        if lname == b"content-length":
            has_length = True
        elif lname == b"date":
            has_date = True
        parts.append(b"%s: %s\r\n" % (name, value))
    if connection and not named:
        tokens = frozenset(t.strip().lower() for t in connection.split(b",")) - _PLAIN_CONNECTION
        if tokens:   # the backend names fields of its own as hop-by-hop (rare): leave them out too
            return backend_fields(raw, length, tokens)
    if not has_length:
        parts.append(b"Content-Length: %d\r\n" % length)
    block = b"".join(parts)
    if block.count(b"\n") != len(parts) or block.count(b"\r") != len(parts):
        return None   # one CR and one LF per field, or a value smuggled a line break in
    return block, not has_date


def with_extra(fields: tuple[bytes, bool], extra: Headers) -> tuple[bytes, bool] | None:
    """A relayed header block with the gateway's own fields (``X-Trace-Id``, a canary cookie) added after the
    backend's; None when one of their values holds a CR or LF."""
    if not extra:
        return fields
    tail = "".join([f"{name}: {value}\r\n" for name, value in extra]).encode("latin-1")
    if tail.count(b"\n") != len(extra) or tail.count(b"\r") != len(extra):
        return None
    return fields[0] + tail, fields[1]


def downstream_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Headers for the client: the backend's, less hop-by-hop ones and those its ``Connection`` names."""
    raw = tuple(raw)
    named = _connection_tokens(raw)
    out: Headers = []
    for bname, bvalue in raw:
        lname = bname.decode("latin-1").lower()
        if lname in HOP_BY_HOP or lname in named:
            continue
        out.append((bname.decode("latin-1"), bvalue.decode("latin-1")))
    return out
