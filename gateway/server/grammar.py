"""The request grammar the screen holds clients to (RFC 9112 and RFC 9110): limits, tokens, methods, the request
line, header fields, chunk-size lines, and Host values."""

from __future__ import annotations

import ipaddress
import re

MAX_TARGET = 16384        # bytes in the request line (method, target, version)
MAX_FIELD = 16383         # bytes in one header field line; differs from MAX_TARGET so the two can be told apart
MAX_FIELDS = 100          # header (or trailer) fields in one message; Envoy's default too

# The methods llhttp accepts in HTTP mode: the pure-Python parser accepts any token and upper-cases it.
METHODS = frozenset({
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
    "COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL",
    "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE",
    "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
})
# Fields that say where a message ends or where it goes: never valid as trailers (RFC 9110 §6.5.1).
NOT_TRAILERS = frozenset({b"content-length", b"transfer-encoding", b"host"})
MAX_CHUNK = 2**63 - 1

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN_RE = re.compile(TOKEN)
UPPER_METHOD = re.compile(rb"[A-Z][A-Z_-]*")
VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
TARGET = re.compile(rb"[!-~]+")
FIELD = re.compile(rb"(" + TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)")
DIGITS = re.compile(rb"[0-9]{1,18}")
QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)((?:;" + TOKEN + rb"(?:=(?:" + TOKEN + rb"|" + QUOTED + rb"))?)*)")
# uri-host [":" port] (RFC 3986 §3.2.2, §3.2.3). A reg-name is limited to unreserved characters: RFC 3986 would
# also allow sub-delimiters and percent-escapes, which no DNS name has, and a ',' or ';' in Host would split
# X-Forwarded-Host or Forwarded into two values downstream.
HOST = re.compile(rb"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._~-]*))(?::([0-9]{0,5}))?")
# Fields the screen needs to see whole: framing, Host, and what makes a request an upgrade or close the connection.
WATCHED = frozenset({b"content-length", b"transfer-encoding", b"host", b"connection", b"upgrade"})
# The common case in a few scans in C: a whole head in one read, nothing unusual about it (see ``_whole_head``).
PLAIN_REQUEST_LINE = re.compile(rb"([A-Z][A-Z_-]*) [!-~]+ HTTP/1\.([01])\r\n")
PLAIN_FIELDS = re.compile(rb"(?:" + TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*")
WATCHED_LINES = re.compile(rb"^(content-length|transfer-encoding|host|connection|upgrade):[ \t]*(.*?)[ \t]*\r?$",
                            re.M)
UNDERSCORE_NAME = re.compile(rb"^[^:\r\n]*_[^:\r\n]*:", re.M)
UPGRADES = frozenset({b"websocket", b"tcp"})   # the upgrades aiohttp's parsers act on


def valid_host(raw: bytes) -> bool:
    """Whether a Host value is a valid host[:port] (``split_host`` without building the result)."""
    m = HOST.fullmatch(raw)
    if m is None:
        return False
    literal, _name, port = m.groups()
    return (not port or int(port) <= 65535) and (literal is None or split_host(raw) is not None)


def split_host(value: bytes | str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a valid Host value (port None when absent or empty; an IPv6 address without its
    brackets), or None when the value is not a valid host[:port]."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    m = HOST.fullmatch(raw)
    if m is None:
        return None
    literal, name, port = m.groups()
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode())
        except ValueError:
            return None
    if port and int(port) > 65535:
        return None
    host = (literal if literal is not None else name).decode().lower()
    return host, int(port) if port else None
