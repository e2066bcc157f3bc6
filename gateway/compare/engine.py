"""Compare a legacy response with its shadow: the comparison engine of the ``shadow`` stage.

Model
-----
Each side's response is a :class:`Captured` (status, headers, body as the gateway captured it, perhaps cut at
the capture cap). :func:`compare` looks at three layers and turns every divergence into a :class:`Difference`:

1. **status**;
2. **headers**, case-insensitively. Headers that differ by construction are not compared at all: ``Date``,
   ``Server``, hop-by-hop headers (RFC 9110 §7.6.1, including those the ``Connection`` field names),
   ``X-Served-By``, ``X-Trace-Id``, ``traceparent``/``tracestate``; and ``Content-Length``,
   ``Content-Encoding``, ``ETag`` when the bodies are compared semantically or after decoding (they describe
   the bytes on the wire, which may legitimately differ). These are dropped silently, not reported as ignored:
   otherwise every comparison would be ``ignored`` and never ``match``. ``Content-Type`` is compared as media
   type + charset, ``Set-Cookie`` by cookie names only (values are per session, and secrets), ``Vary`` as a
   set of names;
3. **body**, by content type: JSON (``application/json``, ``*+json``) semantically, text (``text/*``, XML,
   forms) by lines, anything else by length and SHA-256. ``Content-Encoding`` gzip/deflate (and br when the
   ``brotli`` module is importable) is undone first, for comparison only, and never beyond
   ``MAX_DECOMPRESSED`` bytes: past that, or on a broken stream, the raw bytes are compared by hash.

Every Difference lands in one of two buckets: ``differences`` (they count) or ``ignored`` (excluded by an
ignore rule or a learned noise field, or a note such as ``truncated``). The verdict follows: nothing at all is
``match``, only ignored ones is ``ignored``, anything counted is ``mismatch``.

Paths
-----
A JSON difference is reported at a concrete path (``$.items[3].created_at``) and counted under its *field*,
the path with array indices collapsed (``$.items[*].created_at``). Keys that are not identifiers are quoted:
``$['a b']``. Fields are themselves valid ignore paths, which is how learned noise is applied.

Ignore and unordered paths use this grammar (a JSONPath subset)::

    path     := "$" segment*
    segment  := "." name | ".*" | "[" selector "]" | ".." ( name | "*" | "[" selector "]" )
    selector := digits | "*" | "'" chars "'" | '"' chars '"'      (backslash escapes the next char)
    name     := a letter or "_", then letters, digits, "_" or "-"

``*`` matches any key or index, ``..`` any number (zero or more) of levels. An ignore path ignores the whole
subtree it selects. Filters, slices, unions and negative indices are rejected with a :class:`RuleError`.
Header rules are ``header:NAME``, or ``header:PREFIX*``.

Arrays
------
Arrays are compared index by index; a surplus on one side is reported per index as ``missing``/``extra``.
An ``unordered`` array is compared as a multiset: each element is reduced to a canonical, hashable form (ignored
subtrees dropped, object keys sorted, nested unordered arrays sorted, ``1`` and ``1.0`` equal) and elements are
matched through a hash table, O(n). Unmatched elements are reported as ``missing``/``extra``. With a
``tolerance`` the canonical forms of nearly equal numbers differ, so the unmatched remainder is sorted by
canonical form and paired by a merge walk that accepts pairs equal within the tolerance, O(n log n): best
effort, since sorting may separate two elements that are close in value. With ``by: KEY`` elements are paired
by the value of that key and compared field by field; elements lacking the key fall back to the multiset.

Tolerance is absolute only (``|a - b| <= tolerance``): the differences it exists for are rounding
differences (a price to 2 or 3 decimals, a float average), which are absolute; it applies to every number.

Noise
-----
:func:`noisy_fields` compares two answers of the legacy backend to the same request: the fields that differ
there change by themselves (timestamps, generated ids) and are passed back to :func:`compare` as ``noise``;
differences on them are ignored. In that mode the unmatched elements of unordered arrays are paired in their
original order and compared field by field, so that noise is learned per field, not per whole element.

The module is pure: no I/O, no clock, no event loop. Rules are compiled once per config generation by
:func:`compile_rules`; :func:`compare` does work linear in the size of the bodies, apart from the sorting noted
above. At most ``max_differences`` differences of each bucket are listed; the rest are counted in one
``omitted`` difference whose ``legacy`` value is how many were left out.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest
from operator import itemgetter
from typing import Any

try:  # optional: without it, br bodies are compared by hash
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

__all__ = [
    "MAX_DECOMPRESSED", "Captured", "CompareRules", "Comparison", "Difference", "RuleError",
    "compare", "compile_rules", "noisy_fields",
]

MAX_DECOMPRESSED = 8 * 1024 * 1024   # a zip bomb stops here; the body is then compared by hash
PREVIEW_CHARS = 200                  # long values in a Difference are cut to this many characters
TEXT_LINES_REPORTED = 5              # text bodies: the first few differing lines are listed

MATCH, MISMATCH, IGNORED = "match", "mismatch", "ignored"


# --------------------------------------------------------------------------------------------------- public types

@dataclass(frozen=True, slots=True)
class Captured:
    """One side's response as captured by the gateway; ``body`` may be cut at the capture cap (``truncated``)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    truncated: bool = False


class RuleError(ValueError):
    """A compare rule that does not compile. ``key`` names the entry (``ignore[2]``); str() is the message."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Difference:
    path: str      # concrete: "$.items[3].created_at", "status", "header:content-type", "body", "body:line:7"
    field: str     # collapsed for counting: "$.items[*].created_at", "body:line:*"
    kind: str      # changed | missing (only in legacy) | extra (only in shadow) | type | invalid_json |
                   # truncated | length | line_endings | omitted
    legacy: object
    shadow: object


@dataclass(frozen=True, slots=True)
class Comparison:
    verdict: str
    differences: tuple[Difference, ...]
    ignored: tuple[Difference, ...]


# ------------------------------------------------------------------------------------------------ path grammar

_KEY, _INDEX, _ANY, _DESCEND = "key", "index", "any", "descend"
Step = tuple[str, str | int | None]
Pattern = tuple[Step, ...]
State = tuple[int, int]            # (pattern number, position of the next step in it)
States = frozenset[State]
_NO_STATES: States = frozenset()

_NAME = re.compile(r"[^\W\d][\w-]*")
_DIGITS = re.compile(r"\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 9110 §5.6.2 token


class _Syntax(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def _parse_path(text: str) -> Pattern:
    if not text.startswith("$"):
        raise _Syntax(0, "a JSON path starts with '$' (or use 'header:NAME' for a header)")
    steps: list[Step] = []
    i = 1
    while i < len(text):
        if text.startswith("..", i):
            steps.append((_DESCEND, None))
            step, i = _parse_selector(text, i + 2, after_dot=True)
        elif text[i] == ".":
            step, i = _parse_selector(text, i + 1, after_dot=True)
        elif text[i] == "[":
            step, i = _parse_selector(text, i, after_dot=False)
        else:
            raise _Syntax(i, f"unexpected {text[i]!r}; expected '.', '..' or '['")
        steps.append(step)
    return tuple(steps)


def _parse_selector(text: str, i: int, *, after_dot: bool) -> tuple[Step, int]:
    if i < len(text) and text[i] == "*":
        return (_ANY, None), i + 1
    if i < len(text) and text[i] == "[":
        return _parse_bracket(text, i)
    if not after_dot:
        raise _Syntax(i, "expected '['")
    m = _NAME.match(text, i)
    if m is None:
        if i < len(text) and text[i].isdigit():
            raise _Syntax(i, "a name cannot start with a digit: use [N] for an index or ['N'] for a key")
        raise _Syntax(i, "expected a name, '*' or '[' after '.'")
    return (_KEY, m.group()), m.end()


def _parse_bracket(text: str, i: int) -> tuple[Step, int]:
    j = i + 1
    if j >= len(text):
        raise _Syntax(i, "unterminated '['; expected an index, '*' or a quoted key")
    c = text[j]
    if c == "*":
        step: Step = (_ANY, None)
        j += 1
    elif c in "'\"":
        key, j = _parse_quoted(text, j)
        step = (_KEY, key)
    elif (m := _DIGITS.match(text, j)) is not None:
        step = (_INDEX, int(m.group()))
        j = m.end()
    elif c == "-":
        raise _Syntax(j, "negative indices are not supported")
    elif c == "?":
        raise _Syntax(j, "filter expressions are not supported")
    else:
        raise _Syntax(j, "expected an index, '*' or a quoted key inside '[...]'")
    if j >= len(text) or text[j] != "]":
        if j < len(text) and text[j] in ":,":
            raise _Syntax(j, "slices and unions are not supported")
        raise _Syntax(j, "expected ']'")
    return step, j + 1


def _parse_quoted(text: str, i: int) -> tuple[str, int]:
    quote, j, out = text[i], i + 1, []
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text):
            out.append(text[j + 1])
            j += 2
        elif c == quote:
            return "".join(out), j + 1
        else:
            out.append(c)
            j += 1
    raise _Syntax(i, f"unterminated quoted key; expected a closing {quote}")


def _render_key(key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return "." + key
    return "['" + key.replace("\\", "\\\\").replace("'", "\\'") + "']"


# A concrete path is built while walking as a linked list (parent, segment): O(1) per node. It is rendered
# only when a difference is recorded.
Node = tuple[Any, str | int] | None


def _segments(node: Node) -> list[str | int]:
    segs: list[str | int] = []
    while node is not None:
        node, seg = node
        segs.append(seg)
    segs.reverse()
    return segs


def _render(node: Node, *, collapse: bool) -> str:
    parts = ["$"]
    for seg in _segments(node):
        if isinstance(seg, int):
            parts.append("[*]" if collapse else f"[{seg}]")
        else:
            parts.append(_render_key(seg))
    return "".join(parts)


def _step_matches(step: Step, seg: str | int) -> bool:
    kind, arg = step
    if kind == _ANY:
        return True
    if kind == _KEY:
        return isinstance(seg, str) and seg == arg
    return isinstance(seg, int) and seg == arg


@dataclass(frozen=True, slots=True)
class _PathSet:
    """A set of compiled paths, matched during the walk as an NFA: the walk carries the active states."""

    patterns: tuple[Pattern, ...] = ()
    indexed: bool = False   # some pattern names a specific index: steps over indices depend on the index

    @classmethod
    def of(cls, patterns: Iterable[Pattern]) -> _PathSet:
        patterns = tuple(patterns)
        return cls(patterns, any(kind == _INDEX for p in patterns for kind, _ in p))

    def start(self) -> States:
        return frozenset((p, 0) for p in range(len(self.patterns)))

    def step(self, states: States, seg: str | int) -> States:
        if not states:
            return _NO_STATES
        out: set[State] = set()
        for p, pos in states:
            steps = self.patterns[p]
            if pos == len(steps):
                continue
            if steps[pos][0] == _DESCEND:
                out.add((p, pos))   # ".." may swallow this segment and stay active below it
                pos += 1            # ... or let the step after it match this segment
            if _step_matches(steps[pos], seg):
                out.add((p, pos + 1))
        return frozenset(out)

    def first_done(self, states: States) -> int | None:
        done = [p for p, pos in states if pos == len(self.patterns[p])]
        return min(done) if done else None


# ------------------------------------------------------------------------------------------------------- rules

_DEFAULT_SILENT_HEADERS = frozenset({
    "date", "server", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "x-served-by", "x-trace-id", "traceparent", "tracestate",
})
_DEFAULT_SILENT_PREFIXES = ("proxy-",)
_BODY_BYTES_HEADERS = frozenset({"content-length", "content-encoding", "etag"})


@dataclass(frozen=True, slots=True)
class CompareRules:
    """Compiled compare rules of one route; build with :func:`compile_rules` once per config generation."""

    ignore: tuple[str, ...] = ()                 # JSON ignore paths as written
    unordered: tuple[tuple[str, str | None], ...] = ()   # (path, by)
    tolerance: float = 0.0
    ignore_headers: frozenset[str] = frozenset()           # lower-case names
    ignore_header_prefixes: tuple[str, ...] = ()           # from "header:X-Foo-*"
    headers_compare: bool = True
    max_differences: int = 100
    ignore_set: _PathSet = _PathSet()
    unordered_set: _PathSet = _PathSet()


def compile_rules(*, ignore: Iterable[str] = (), unordered: Iterable[str | Mapping[str, Any]] = (),
                  tolerance: float = 0.0, headers_ignore: Iterable[str] = (), headers_compare: bool = True,
                  max_differences: int = 100) -> CompareRules:
    """Check and compile compare rules; raise :class:`RuleError` naming the first bad entry."""
    json_paths: list[str] = []
    patterns: list[Pattern] = []
    names: set[str] = set()
    prefixes: list[str] = []
    for i, entry in enumerate(_as_list(ignore, "ignore")):
        key = f"ignore[{i}]"
        if not isinstance(entry, str):
            raise RuleError(key, f"expected a JSON path or 'header:NAME', got {type(entry).__name__}")
        if entry.lower().startswith("header:"):
            _add_header_rule(entry[len("header:"):].strip(), key, names, prefixes)
        else:
            patterns.append(_compile_path(entry, key))
            json_paths.append(entry)
    for i, name in enumerate(_as_list(headers_ignore, "headers_ignore")):
        _add_header_rule(name if isinstance(name, str) else "", f"headers_ignore[{i}]", names, prefixes)

    unordered_rules: list[tuple[str, str | None]] = []
    for i, entry in enumerate(_as_list(unordered, "unordered")):
        unordered_rules.append(_unordered_rule(entry, f"unordered[{i}]"))

    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise RuleError("tolerance", f"expected a number >= 0, got {tolerance!r}")
    if not 0 <= tolerance < float("inf"):
        raise RuleError("tolerance", f"expected a finite number >= 0, got {tolerance!r}")
    if not isinstance(headers_compare, bool):
        raise RuleError("headers", f"expected true or false, got {headers_compare!r}")
    if isinstance(max_differences, bool) or not isinstance(max_differences, int) or max_differences < 1:
        raise RuleError("max_differences", f"expected a positive integer, got {max_differences!r}")

    return CompareRules(
        ignore=tuple(json_paths), unordered=tuple(unordered_rules), tolerance=float(tolerance),
        ignore_headers=frozenset(names), ignore_header_prefixes=tuple(prefixes), headers_compare=headers_compare,
        max_differences=max_differences, ignore_set=_PathSet.of(patterns),
        unordered_set=_PathSet.of(_compile_path(path, "unordered") for path, _ in unordered_rules),
    )


def _as_list(value: Any, key: str) -> list[Any]:
    # A bare string is iterable too; taking it as a list of one-character rules would be a silent typo.
    if isinstance(value, str | bytes | Mapping):
        raise RuleError(key, f"expected a list, got {type(value).__name__} {value!r}")
    try:
        return list(value)
    except TypeError:
        raise RuleError(key, f"expected a list, got {type(value).__name__}") from None


def _compile_path(text: str, key: str) -> Pattern:
    try:
        return _parse_path(text)
    except _Syntax as exc:
        raise RuleError(key, f"{text!r}: {exc.message} (at offset {exc.offset})") from None


def _add_header_rule(name: str, key: str, names: set[str], prefixes: list[str]) -> None:
    prefix = name.endswith("*")
    bare = name[:-1] if prefix else name
    if not bare or not _TCHAR.fullmatch(bare):
        raise RuleError(key, f"expected a header name like 'header:Date' or 'header:X-Debug-*', got {name!r}")
    if prefix:
        prefixes.append(bare.lower())
    else:
        names.add(bare.lower())


def _unordered_rule(entry: Any, key: str) -> tuple[str, str | None]:
    if isinstance(entry, str):
        return _checked_path(entry, key), None
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"path", "by"}
        if unknown:
            raise RuleError(key, f"unknown key(s) {sorted(map(str, unknown))}; expected 'path' and optional 'by'")
        path, by = entry.get("path"), entry.get("by")
        if not isinstance(path, str):
            raise RuleError(key, f"expected 'path' to be a JSON path string, got {path!r}")
        if by is not None and (not isinstance(by, str) or not by):
            raise RuleError(key, f"expected 'by' to be a non-empty key name, got {by!r}")
        return _checked_path(path, key), by
    raise RuleError(key, f"expected a JSON path or {{path: ..., by: ...}}, got {type(entry).__name__}")


def _checked_path(text: str, key: str) -> str:
    _compile_path(text, key)
    return text


@lru_cache(maxsize=256)
def _with_noise(base: _PathSet, noise: frozenset[str]) -> _PathSet:
    """The ignore paths plus the learned JSON noise fields (fields are valid paths by construction)."""
    extra: list[Pattern] = []
    for field in sorted(noise):
        if field.startswith("$"):
            try:
                extra.append(_parse_path(field))
            except _Syntax:
                continue   # noise comes from storage; a stale or foreign entry must not break comparison
    return _PathSet.of(base.patterns + tuple(extra)) if extra else base


# -------------------------------------------------------------------------------------------------- collectors

class _Collector:
    """Sorts differences into the two buckets, listing at most ``cap`` of each."""

    def __init__(self, noise: frozenset[str], cap: int) -> None:
        self.noise = noise
        self.cap = cap
        self.counted: list[Difference] = []
        self.ignored: list[Difference] = []
        self.omitted = [0, 0]

    def add(self, path: str, field: str, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        ignored = ignored or field in self.noise
        bucket = self.ignored if ignored else self.counted
        if len(bucket) >= self.cap:
            self.omitted[ignored] += 1
        else:
            bucket.append(Difference(path, field, kind, _preview(legacy), _preview(shadow)))

    def add_json(self, node: Node, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        # Noise fields reach the JSON walk as ignore paths, so `ignored` is already final here.
        bucket = self.ignored if ignored else self.counted
        if len(bucket) >= self.cap:
            self.omitted[ignored] += 1
        else:
            bucket.append(Difference(_render(node, collapse=False), _render(node, collapse=True), kind,
                                     _preview(legacy), _preview(shadow)))

    def result(self) -> Comparison:
        for ignored, bucket in ((False, self.counted), (True, self.ignored)):
            if self.omitted[ignored]:
                bucket.append(Difference("body", "body", "omitted", self.omitted[ignored], None))
        verdict = MISMATCH if self.counted else IGNORED if self.ignored else MATCH
        return Comparison(verdict, tuple(self.counted), tuple(self.ignored))


class _FieldCollector:
    """For noise learning: only the set of fields that differ matters."""

    def __init__(self) -> None:
        self.fields: set[str] = set()

    def add(self, path: str, field: str, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            self.fields.add(field)

    def add_json(self, node: Node, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            self.fields.add(_render(node, collapse=True))


class _Unequal(Exception):
    pass


class _Probe:
    """Answers "equal within the rules?" by stopping at the first difference that counts."""

    def add(self, path: str, field: str, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            raise _Unequal

    def add_json(self, node: Node, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            raise _Unequal


Sink = _Collector | _FieldCollector | _Probe


def _preview(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + "…"
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (ValueError, RecursionError):
            return "…"
        return value if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
    return value


# ------------------------------------------------------------------------------------------------ entry points

def compare(legacy: Captured, shadow: Captured, rules: CompareRules, noise: Collection[str] = ()) -> Comparison:
    """Compare the legacy response with the shadow's; differences on ``noise`` fields are ignored."""
    noise_set = frozenset(noise)
    out = _Collector(noise_set, rules.max_differences)
    ignore = _with_noise(rules.ignore_set, noise_set) if noise_set else rules.ignore_set
    _compare_into(legacy, shadow, rules, ignore, out, learning=False)
    return out.result()


def noisy_fields(first: Captured, second: Captured, rules: CompareRules) -> frozenset[str]:
    """Fields that differ between two answers of the same backend to the same request: noise."""
    out = _FieldCollector()
    _compare_into(first, second, rules, rules.ignore_set, out, learning=True)
    return frozenset(out.fields)


def _compare_into(legacy: Captured, shadow: Captured, rules: CompareRules, ignore: _PathSet, out: Sink,
                  *, learning: bool) -> None:
    if legacy.status != shadow.status:
        out.add("status", "status", "changed", legacy.status, shadow.status, False)
    a, b = _Side.of(legacy), _Side.of(shadow)
    mode = _body_mode(a, b)
    if rules.headers_compare:
        _compare_headers(a, b, rules, _body_bytes_headers_skipped(a, b, mode), out)
    if mode == "prefix":
        _compare_prefix(a, b, out)
    elif mode == "raw":
        _compare_binary(a, b, out)
    elif a.body == b.body:
        return
    elif mode == "json":
        _compare_json(a, b, rules, ignore, out, learning)
    elif mode == "text":
        _compare_text(a, b, out)
    else:
        _compare_binary(a, b, out)


# ------------------------------------------------------------------------------------------------------ sides

@dataclass(frozen=True, slots=True)
class _Side:
    captured: Captured
    headers: dict[str, list[str]]     # lower-case name -> values in order
    media: str                        # "application/json", "" if absent
    charset: str | None
    body: bytes                       # decoded (decompressed) when possible
    note: str | None                  # why `body` is the raw body: "too_large", "decode_error", ...

    @classmethod
    def of(cls, c: Captured) -> _Side:
        headers: dict[str, list[str]] = {}
        for name, value in c.headers:
            headers.setdefault(name.strip().lower(), []).append(value)
        media, charset = _content_type(headers.get("content-type"))
        body, note = _decode_body(c.body, headers.get("content-encoding", ()), partial=c.truncated)
        return cls(c, headers, media, charset, body, note)


def _content_type(values: list[str] | None) -> tuple[str, str | None]:
    if not values:
        return "", None
    media, *params = values[0].split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    return media.strip().lower(), charset


def _is_json(media: str) -> bool:
    return media in ("application/json", "text/json") or media.endswith("+json")


def _is_text(media: str) -> bool:
    return (media.startswith("text/") or media.endswith("+xml") or media in (
        "application/xml", "application/x-www-form-urlencoded", "application/javascript",
        "application/yaml", "application/x-yaml", "application/x-ndjson"))


def _body_mode(a: _Side, b: _Side) -> str:
    if a.captured.truncated or b.captured.truncated:
        return "prefix"
    if a.note or b.note:
        return "raw"
    if _is_json(a.media) or _is_json(b.media):
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


# ---------------------------------------------------------------------------------------------------- headers

def _body_bytes_headers_skipped(a: _Side, b: _Side, mode: str) -> frozenset[str]:
    """Which of Content-Length, Content-Encoding, ETag not to compare: they describe the bytes on the wire."""
    if mode in ("json", "text"):
        return _BODY_BYTES_HEADERS   # the bodies are compared by meaning; the bytes may differ legitimately
    if mode == "raw":
        return frozenset()           # raw bytes compared: so are the headers that describe them
    # Decoded bytes compared: the coding does not matter, and lengths of differently coded bodies differ.
    if a.headers.get("content-encoding") == b.headers.get("content-encoding"):
        return frozenset({"content-encoding"})
    return _BODY_BYTES_HEADERS


def _compare_headers(a: _Side, b: _Side, rules: CompareRules, skipped: frozenset[str], out: Sink) -> None:
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
        media, charset = _content_type(values)
        if charset is None and _is_json(media):
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


# ------------------------------------------------------------------------------------------------ bodies: bytes

def _digest(side: _Side, raw: bool) -> dict[str, object]:
    body = side.captured.body if raw else side.body
    shown: dict[str, object] = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    if side.note:
        shown["note"] = side.note
    return shown


def _compare_binary(a: _Side, b: _Side, out: Sink) -> None:
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


def _compare_prefix(a: _Side, b: _Side, out: Sink) -> None:
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


def _sizes(body: bytes, side: _Side) -> dict[str, object]:
    return {"length": len(body), "truncated": side.captured.truncated}


def _excerpt(body: bytes, at: int, side: _Side) -> dict[str, object]:
    shown = _sizes(body, side)
    shown["offset"] = at
    shown["excerpt"] = _decode(body[at:at + 80], side.charset)
    return shown


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


# ------------------------------------------------------------------------------------------------- bodies: text

def _decode(data: bytes, charset: str | None) -> str:
    return data.decode(charset if charset and _known(charset) else "utf-8", "replace")


def _text(side: _Side) -> str:
    return _decode(side.body, side.charset)


def _lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()   # a final newline ends the last line; it does not start a new one
    return lines


def _compare_text(a: _Side, b: _Side, out: Sink) -> None:
    ta, tb = _text(a), _text(b)
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


# ------------------------------------------------------------------------------------------------- bodies: JSON

_NOT_JSON = object()


def _parse_json(side: _Side) -> tuple[Any, str | None]:
    try:
        if side.charset and side.charset.replace("-", "").replace("_", "") not in ("utf8", "utf16", "utf32"):
            return json.loads(_text(side)), None
        return json.loads(side.body), None
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _NOT_JSON, str(exc) or type(exc).__name__


def _compare_json(a: _Side, b: _Side, rules: CompareRules, ignore: _PathSet, out: Sink, learning: bool) -> None:
    if not a.body or not b.body:
        kind = "missing" if a.body else "extra"
        out.add("body", "body", kind, _text(a), _text(b), False)
        return
    va, err_a = _parse_json(a)
    vb, err_b = _parse_json(b)
    if err_a and err_b:
        _compare_text(a, b, out)   # neither side is JSON: the lines say more than two parse errors
        return
    if err_a or err_b:
        out.add("body", "body", "invalid_json",
                f"invalid JSON: {err_a}" if err_a else _text(a), f"invalid JSON: {err_b}" if err_b else _text(b),
                False)
        return
    try:
        _JsonWalk(rules, ignore, out, learning).run(va, vb)
    except RecursionError:
        # Nesting deeper than the interpreter allows to walk: fall back to bytes rather than fail.
        _compare_binary(a, b, out)


_KINDS: dict[type, str] = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                           bool: "boolean", type(None): "null"}
_IGNORED_ELEMENT = (-1, 0)   # canonical form of an ignored array element: equal to any other ignored one
_by_first = itemgetter(0)


def _numbers_equal(a: float, b: float, tolerance: float) -> bool:
    if a == b or (a != a and b != b):   # NaN (json accepts it) equals NaN here, so x always matches x
        return True
    if tolerance:
        try:
            return abs(a - b) <= tolerance
        except OverflowError:   # an int too large for a float cannot be within a float tolerance
            return False
    return False


class _JsonWalk:
    """Walks two parsed documents in step, carrying the ignore and unordered NFA states of each node."""

    def __init__(self, rules: CompareRules, ignore: _PathSet, out: Sink, learning: bool) -> None:
        self.ignore = ignore
        self.unordered = rules.unordered_set
        self.by = tuple(by for _, by in rules.unordered)
        self.tolerance = rules.tolerance
        self.out = out
        self.learning = learning
        # Step results are memoised per walk: the same few (states, key) pairs recur on every element of an
        # array. Indices share one entry unless a pattern names an index.
        self._ignore_steps: dict[tuple[States, str | int], tuple[States, bool]] = {}
        self._unordered_steps: dict[tuple[States, str | int], States] = {}

    def ignore_step(self, states: States, seg: str | int) -> tuple[States, bool]:
        """The ignore states below `seg`, and whether `seg`'s subtree is ignored."""
        key = (states, -1 if isinstance(seg, int) and not self.ignore.indexed else seg)
        hit = self._ignore_steps.get(key)
        if hit is None:
            nxt = self.ignore.step(states, seg)
            hit = self._ignore_steps[key] = (nxt, self.ignore.first_done(nxt) is not None)
        return hit

    def unordered_step(self, states: States, seg: str | int) -> States:
        key = (states, -1 if isinstance(seg, int) and not self.unordered.indexed else seg)
        hit = self._unordered_steps.get(key)
        if hit is None:
            hit = self._unordered_steps[key] = self.unordered.step(states, seg)
        return hit

    def run(self, a: Any, b: Any) -> None:
        ist = self.ignore.start()
        ignored = self.ignore.first_done(ist) is not None
        self.value(a, b, None, _NO_STATES if ignored else ist, self.unordered.start(), ignored)

    def descend(self, ist: States, ust: States, ignored: bool, seg: str | int) -> tuple[States, States, bool]:
        cust = self.unordered_step(ust, seg) if ust else ust
        if ignored or not ist:
            return _NO_STATES, cust, ignored
        cist, done = self.ignore_step(ist, seg)
        if done:
            return _NO_STATES, cust, True   # the whole subtree is ignored; no need to track states below
        return cist, cust, False

    # -- values

    def value(self, a: Any, b: Any, node: Node, ist: States, ust: States, ignored: bool) -> None:
        ka, kb = _KINDS.get(type(a)), _KINDS.get(type(b))
        if ka != kb:
            self.out.add_json(node, "type", a, b, ignored)
        elif ka == "object":
            self.object(a, b, node, ist, ust, ignored)
        elif ka == "array":
            self.array(a, b, node, ist, ust, ignored)
        elif ka == "number":
            if not _numbers_equal(a, b, self.tolerance):
                self.out.add_json(node, "changed", a, b, ignored)
        elif a != b:
            self.out.add_json(node, "changed", a, b, ignored)

    def object(self, a: dict[str, Any], b: dict[str, Any], node: Node, ist: States, ust: States,
               ignored: bool) -> None:
        for key, va in a.items():
            cist, cust, cign = self.descend(ist, ust, ignored, key)
            if key in b:
                self.value(va, b[key], (node, key), cist, cust, cign)
            else:
                self.out.add_json((node, key), "missing", va, None, cign)
        for key, vb in b.items():
            if key not in a:
                self.out.add_json((node, key), "extra", None, vb, self.descend(ist, ust, ignored, key)[2])

    def array(self, a: list[Any], b: list[Any], node: Node, ist: States, ust: States, ignored: bool) -> None:
        rule = self.unordered.first_done(ust) if ust else None
        if rule is None:
            self.ordered(a, b, node, ist, ust, ignored)
        elif self.by[rule] is not None:
            self.by_key(a, b, self.by[rule], node, ist, ust, ignored)
        else:
            self.multiset(a, b, list(range(len(a))), list(range(len(b))), node, ist, ust, ignored)

    def ordered(self, a: list[Any], b: list[Any], node: Node, ist: States, ust: States, ignored: bool) -> None:
        n = min(len(a), len(b))
        for i in range(n):
            self.pair(a, b, i, i, node, ist, ust, ignored)
        for i in range(n, len(a)):
            self.out.add_json((node, i), "missing", a[i], None, self.descend(ist, ust, ignored, i)[2])
        for j in range(n, len(b)):
            self.out.add_json((node, j), "extra", None, b[j], self.descend(ist, ust, ignored, j)[2])

    def pair(self, a: list[Any], b: list[Any], i: int, j: int, node: Node, ist: States, ust: States,
             ignored: bool) -> None:
        """Compare a[i] with b[j], reported at the legacy index i."""
        cist, cust, cign = self.descend(ist, ust, ignored, i)
        self.value(a[i], b[j], (node, i), cist, cust, cign)

    def unmatched(self, a: list[Any], b: list[Any], left_a: Iterable[int], left_b: Iterable[int], node: Node,
                  ist: States, ust: States, ignored: bool) -> None:
        for i in sorted(left_a):
            self.out.add_json((node, i), "missing", a[i], None, self.descend(ist, ust, ignored, i)[2])
        for j in sorted(left_b):
            self.out.add_json((node, j), "extra", None, b[j], self.descend(ist, ust, ignored, j)[2])

    # -- unordered arrays

    def multiset(self, a: list[Any], b: list[Any], ia: list[int], ib: list[int], node: Node, ist: States,
                 ust: States, ignored: bool) -> None:
        ka = {i: self.element_canon(a[i], ist, ust, ignored, i) for i in ia}
        kb = {j: self.element_canon(b[j], ist, ust, ignored, j) for j in ib}
        buckets: dict[Any, list[int]] = {}
        for j in reversed(ib):   # reversed, so that pop() hands out the lowest index first
            buckets.setdefault(kb[j], []).append(j)
        left_a: list[int] = []
        for i in ia:
            candidates = buckets.get(ka[i])
            if candidates:
                j = candidates.pop()
                # Equal up to ignored subtrees: walk the pair only to record the ignored differences.
                if ist or ignored:
                    self.pair(a, b, i, j, node, ist, ust, ignored)
            else:
                left_a.append(i)
        left_b = sorted(j for js in buckets.values() for j in js)
        if self.learning:
            # Noise learning: the same backend usually answers in the same order; pairing the leftovers in
            # order yields the fields that changed rather than whole elements.
            for i, j in zip(left_a, left_b, strict=False):
                self.pair(a, b, i, j, node, ist, ust, ignored)
            n = min(len(left_a), len(left_b))
            left_a, left_b = left_a[n:], left_b[n:]
        elif self.tolerance and left_a and left_b:
            left_a, left_b = self.pair_within_tolerance(a, b, left_a, left_b, ka, kb, node, ist, ust, ignored)
        self.unmatched(a, b, left_a, left_b, node, ist, ust, ignored)

    def pair_within_tolerance(self, a: list[Any], b: list[Any], left_a: list[int], left_b: list[int],
                              ka: dict[int, Any], kb: dict[int, Any], node: Node, ist: States, ust: States,
                              ignored: bool) -> tuple[list[int], list[int]]:
        """Merge walk over both remainders sorted by canonical form; O(n log n), best effort."""
        sa, sb = sorted(left_a, key=ka.__getitem__), sorted(left_b, key=kb.__getitem__)
        rest_a: list[int] = []
        rest_b: list[int] = []
        x = y = 0
        while x < len(sa) and y < len(sb):
            i, j = sa[x], sb[y]
            if self.equal(a, b, i, j, node, ist, ust, ignored):
                self.pair(a, b, i, j, node, ist, ust, ignored)
                x, y = x + 1, y + 1
            elif ka[i] < kb[j]:
                rest_a.append(i)
                x += 1
            else:
                rest_b.append(j)
                y += 1
        return rest_a + sa[x:], rest_b + sb[y:]

    def equal(self, a: list[Any], b: list[Any], i: int, j: int, node: Node, ist: States, ust: States,
              ignored: bool) -> bool:
        out, self.out = self.out, _Probe()
        try:
            self.pair(a, b, i, j, node, ist, ust, ignored)
            return True
        except _Unequal:
            return False
        finally:
            self.out = out

    def by_key(self, a: list[Any], b: list[Any], by: str, node: Node, ist: States, ust: States,
               ignored: bool) -> None:
        index: dict[Any, list[int]] = {}
        keyless_b: list[int] = []
        for j in reversed(range(len(b))):
            y = b[j]
            if type(y) is dict and by in y:
                index.setdefault(self.canon(y[by], _NO_STATES, _NO_STATES), []).append(j)
            else:
                keyless_b.append(j)
        keyless_a: list[int] = []
        missing: list[int] = []
        for i, x in enumerate(a):
            if type(x) is dict and by in x:
                candidates = index.get(self.canon(x[by], _NO_STATES, _NO_STATES))
                if candidates:
                    self.pair(a, b, i, candidates.pop(), node, ist, ust, ignored)
                else:
                    missing.append(i)
            else:
                keyless_a.append(i)
        self.unmatched(a, b, missing, [j for js in index.values() for j in js], node, ist, ust, ignored)
        if keyless_a or keyless_b:
            self.multiset(a, b, keyless_a, sorted(keyless_b), node, ist, ust, ignored)

    # -- canonical forms

    def element_canon(self, v: Any, ist: States, ust: States, ignored: bool, i: int) -> Any:
        cist, cust, cign = self.descend(ist, ust, ignored, i)
        if cign and not ignored:
            return _IGNORED_ELEMENT
        return self.canon(v, cist, cust)

    def canon(self, v: Any, ist: States, ust: States) -> Any:
        """A hashable, totally ordered form: (rank, payload), where the rank fixes the payload's type.

        Equal forms mean equal values under the rules (ignored subtrees dropped, 1 == 1.0, nested unordered
        arrays sorted); booleans get their own rank because True == 1 in Python but not in JSON.
        """
        t = type(v)
        if t is dict:
            items = []
            for key, x in v.items():
                cist, done = self.ignore_step(ist, key) if ist else (ist, False)
                if not done:
                    items.append((key, self.canon(x, cist, self.unordered_step(ust, key) if ust else ust)))
            items.sort(key=_by_first)
            return (6, tuple(items))
        if t is list:
            parts = []
            for i, x in enumerate(v):
                cist, done = self.ignore_step(ist, i) if ist else (ist, False)
                parts.append(_IGNORED_ELEMENT if done else
                             self.canon(x, cist, self.unordered_step(ust, i) if ust else ust))
            if ust and self.unordered.first_done(ust) is not None:
                parts.sort()
            return (5, tuple(parts))
        if t is str:
            return (4, v)
        if t is bool:
            return (1, v)
        if t is float and v != v:
            return (3, 0)
        if t is int or t is float:
            return (2, v)
        return (0, 0)
