"""Response headers compared case-insensitively, each by what it means.

Headers that differ by construction are not compared at all: ``Date``, ``Server``, hop-by-hop headers
(RFC 9110 §7.6.1, including those the ``Connection`` field names), ``X-Served-By``, ``X-Trace-Id``,
``traceparent``/``tracestate``; and ``Content-Length``, ``Content-Encoding``, ``ETag`` when the bodies are
compared semantically or after decoding (they describe the bytes on the wire, which may legitimately differ).
These are dropped silently, not reported as ignored: otherwise every comparison would be ``ignored`` and never
``match``. ``Content-Type`` is compared as media type + charset, ``Set-Cookie`` by cookie names only (values
are per session, and secrets), ``Vary`` as a set of names.
"""

from __future__ import annotations

from gateway.compare.bodies import Side, content_type, is_json
from gateway.compare.rules import CompareRules
from gateway.compare.verdict import Sink

_DEFAULT_SILENT_HEADERS = frozenset({
    "date", "server", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "x-served-by", "x-trace-id", "traceparent", "tracestate",
})
_DEFAULT_SILENT_PREFIXES = ("proxy-",)
_BODY_BYTES_HEADERS = frozenset({"content-length", "content-encoding", "etag"})


def body_bytes_headers_skipped(a: Side, b: Side, mode: str) -> frozenset[str]:
    """Which of Content-Length, Content-Encoding, ETag not to compare: they describe the bytes on the wire."""
    if mode in ("json", "text"):
        return _BODY_BYTES_HEADERS   # the bodies are compared by meaning; the bytes may differ legitimately
    if mode == "raw":
        return frozenset()           # raw bytes compared: so are the headers that describe them
    # Decoded bytes compared: the coding does not matter, and lengths of differently coded bodies differ.
    if a.headers.get("content-encoding") == b.headers.get("content-encoding"):
        return frozenset({"content-encoding"})
    return _BODY_BYTES_HEADERS


def compare_headers(a: Side, b: Side, rules: CompareRules, skipped: frozenset[str], out: Sink) -> None:
    # Headers the Connection field names are hop-by-hop too (RFC 9110 §7.6.1).
    silent = _connection_tokens(a.headers) | _connection_tokens(b.headers) | skipped
    names = list(a.headers) + [n for n in b.headers if n not in a.headers]
    for name in names:
        if name in _DEFAULT_SILENT_HEADERS or name.startswith(_DEFAULT_SILENT_PREFIXES) or name in silent:
            continue
        ignored = name in rules.ignore_headers or name.startswith(rules.ignore_header_prefixes)
        va, vb = a.headers.get(name), b.headers.get(name)
        field = "header:" + name
        if vb is None:
            out.add(field, field, "missing", _header_shown(name, va), None, ignored)
        elif va is None:
            out.add(field, field, "extra", None, _header_shown(name, vb), ignored)
        elif _header_norm(name, va) != _header_norm(name, vb):
            out.add(field, field, "changed", _header_shown(name, va), _header_shown(name, vb), ignored)


def _connection_tokens(headers: dict[str, list[str]]) -> set[str]:
    return {t.strip().lower() for v in headers.get("connection", ()) for t in v.split(",") if t.strip()}


def _header_norm(name: str, values: list[str]) -> object:
    if name == "content-type":
        media, charset = content_type(values)
        if charset is None and is_json(media):
            charset = "utf-8"   # JSON is UTF-8 unless said otherwise (RFC 8259 §8.1)
        return media, charset
    if name == "set-cookie":
        return sorted(_cookie_names(values))
    if name == "vary":
        return sorted({t.strip().lower() for v in values for t in v.split(",") if t.strip()})
    # Repeated fields are equivalent to one comma-joined field (RFC 9110 §5.3).
    return ", ".join(v.strip() for v in values)


def _header_shown(name: str, values: list[str]) -> object:
    if name == "set-cookie":
        return _cookie_names(values)   # cookie values are secrets: never store them in a diff
    return ", ".join(v.strip() for v in values)


def _cookie_names(values: list[str]) -> list[str]:
    return [v.split(";", 1)[0].split("=", 1)[0].strip() for v in values]
