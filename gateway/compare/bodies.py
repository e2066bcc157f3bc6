"""Each side's answer as the comparers read it: headers by name, media type and charset, and the body with its
``Content-Encoding`` undone.

Bodies are compared by content type (:func:`body_mode`): JSON (``application/json``, ``*+json``) semantically,
text (``text/*``, XML, forms) by lines, anything else by length and SHA-256. ``Content-Encoding`` gzip/deflate
(and br when the ``brotli`` module is importable) is undone first, for comparison only, and never beyond
``MAX_DECOMPRESSED`` bytes: past that, or on a broken stream, the raw bytes are compared by hash.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.compare.rules import Captured

try:  # optional: without it, br bodies are compared by hash
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

MAX_DECOMPRESSED = 8 * 1024 * 1024   # a zip bomb stops here; the body is then compared by hash


@dataclass(frozen=True, slots=True)
class Side:
    """One side's answer, read once for every comparer."""

    captured: Captured
    headers: dict[str, list[str]]     # lower-case name -> values in order
    media: str                        # "application/json", "" if absent
    charset: str | None
    body: bytes                       # decoded (decompressed) when possible
    note: str | None                  # why `body` is the raw body: "too_large", "decode_error", ...

    @classmethod
    def of(cls, c: Captured) -> Side:
        headers: dict[str, list[str]] = {}
        for name, value in c.headers:
            headers.setdefault(name.strip().lower(), []).append(value)
        media, charset = content_type(headers.get("content-type"))
        body, note = _decode_body(c.body, headers.get("content-encoding", ()), partial=c.truncated)
        return cls(c, headers, media, charset, body, note)


def content_type(values: list[str] | None) -> tuple[str, str | None]:
    if not values:
        return "", None
    media, *params = values[0].split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return media.strip().lower(), charset


def is_json(media: str) -> bool:
    return media in ("application/json", "text/json") or media.endswith("+json")


def _is_text(media: str) -> bool:
    return (media.startswith("text/") or media.endswith("+xml") or media in (
        "application/xml", "application/x-www-form-urlencoded", "application/javascript",
        "application/yaml", "application/x-yaml", "application/x-ndjson"))


def body_mode(a: Side, b: Side) -> str:
    """How the bodies are compared: ``prefix`` (one was cut at the capture cap), ``raw`` (one could not be
    decoded), ``json``, ``text`` or ``binary``."""
    if a.captured.truncated or b.captured.truncated:
        return "prefix"
    if a.note or b.note:
        return "raw"
    if is_json(a.media) or is_json(b.media):
        return "json"
    if _is_text(a.media) or _is_text(b.media):
        return "text"
    return "binary"


class _TooLarge(Exception):
    pass


def _decode_body(body: bytes, encodings: Iterable[str], *, partial: bool) -> tuple[bytes, str | None]:
    """Undo Content-Encoding (applied in listed order, so undone in reverse, RFC 9110 §8.4)."""
    codings = [t.strip().lower() for v in encodings for t in v.split(",") if t.strip()]
    raw = body
    try:
        for coding in reversed(codings):
            if coding in ("identity",):
                continue
            if coding in ("gzip", "x-gzip"):
                body = _inflate(body, 16 + zlib.MAX_WBITS, partial)
            elif coding == "deflate":
                # RFC 9110 says zlib-wrapped, but raw deflate is common in the wild.
                try:
                    body = _inflate(body, zlib.MAX_WBITS, partial)
                except zlib.error:
                    body = _inflate(body, -zlib.MAX_WBITS, partial)
            elif coding == "br" and brotli is not None:
                body = _unbrotli(body)
            else:
                return raw, "unsupported_encoding"
    except _TooLarge:
        return raw, "too_large"
    except (zlib.error, ValueError, OSError):
        return raw, "decode_error"
    return body, None


def _inflate(data: bytes, wbits: int, partial: bool) -> bytes:
    out = bytearray()
    while True:
        d = zlib.decompressobj(wbits)
        chunk = data
        while chunk:
            out += d.decompress(chunk, MAX_DECOMPRESSED + 1 - len(out))
            if len(out) > MAX_DECOMPRESSED:
                raise _TooLarge
            chunk = d.unconsumed_tail
        if not d.eof:
            if partial:   # a body cut at the capture cap: its decodable prefix is what we can compare
                return bytes(out)
            raise zlib.error("incomplete compressed stream")
        data = d.unused_data
        # gzip allows several members back to back (RFC 1952 §2.2); anything else after the end is junk.
        if not data or wbits <= zlib.MAX_WBITS:
            return bytes(out)


def _unbrotli(data: bytes) -> bytes:  # pragma: no cover - brotli is optional
    try:
        out = brotli.Decompressor().process(data, output_buffer_limit=MAX_DECOMPRESSED + 1)
    except TypeError:   # older brotli without an output limit
        out = brotli.decompress(data)
    except brotli.error as exc:
        raise ValueError(str(exc)) from None
    if len(out) > MAX_DECOMPRESSED:
        raise _TooLarge
    return out


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


def decode_text(data: bytes, charset: str | None) -> str:
    return data.decode(charset if charset and _known(charset) else "utf-8", "replace")


def body_text(side: Side) -> str:
    return decode_text(side.body, side.charset)
