"""Bodies not compared as JSON: text line by line, anything else by length and SHA-256, and a body cut at the
capture cap by the prefix both sides captured.
"""

from __future__ import annotations

import hashlib
from itertools import zip_longest

from gateway.compare.bodies import Side, body_text, decode_text
from gateway.compare.verdict import Sink

TEXT_LINES_REPORTED = 5              # text bodies: the first few differing lines are listed


def _digest(side: Side, raw: bool) -> dict[str, object]:
    body = side.captured.body if raw else side.body
    shown: dict[str, object] = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if side.note:
        shown["note"] = side.note
    return shown


def compare_binary(a: Side, b: Side, out: Sink) -> None:
    raw = bool(a.note or b.note)
    ba, bb = (a.captured.body, b.captured.body) if raw else (a.body, b.body)
    if ba != bb:
        out.add("body", "body", "changed", _digest(a, raw), _digest(b, raw), False)


def _common_prefix_len(a: bytes, b: bytes) -> int:
    # Bisection over slice equality: memcmp speed, O(n log n) bytes touched, no per-byte Python loop.
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def compare_prefix(a: Side, b: Side, out: Sink) -> None:
    """A truncated body can only be compared by the prefix both sides captured."""
    raw = bool(a.note or b.note)
    ba, bb = (a.captured.body, b.captured.body) if raw else (a.body, b.body)
    n = min(len(ba), len(bb))
    at = _common_prefix_len(ba, bb)
    if at < n:
        out.add("body", "body", "changed", _excerpt(ba, at, a), _excerpt(bb, at, b), False)
    elif (len(ba) < len(bb) and not a.captured.truncated) or (len(bb) < len(ba) and not b.captured.truncated):
        # One side ended (completely captured) before the other side's captured prefix did.
        out.add("body", "body", "length", _sizes(ba, a), _sizes(bb, b), False)
    out.add("body", "body", "truncated", _sizes(ba, a), _sizes(bb, b), True)


def _sizes(body: bytes, side: Side) -> dict[str, object]:
    return {"length": len(body), "truncated": side.captured.truncated}


def _excerpt(body: bytes, at: int, side: Side) -> dict[str, object]:
    shown = _sizes(body, side)
    shown["offset"] = at
    shown["excerpt"] = decode_text(body[at:at + 80], side.charset)
    return shown


def _lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()   # a final newline ends the last line; it does not start a new one
    return lines


def compare_text(a: Side, b: Side, out: Sink) -> None:
    ta, tb = body_text(a), body_text(b)
    la, lb = _lines(ta), _lines(tb)
    if la == lb:
        if ta != tb:   # CRLF vs LF, or a final newline: shown, but not a mismatch
            out.add("body", "body", "line_endings", None, None, True)
        return
    reported = further = 0
    for number, (x, y) in enumerate(zip_longest(la, lb), start=1):
        if x == y:
            continue
        if reported == TEXT_LINES_REPORTED:
            further += 1
            continue
        kind = "missing" if y is None else "extra" if x is None else "changed"
        out.add(f"body:line:{number}", "body:line:*", kind, x, y, False)
        reported += 1
    if further:
        out.add("body", "body:line:*", "omitted", further, None, False)
