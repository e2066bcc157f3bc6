"""The route table: which route answers a request, and why.

A route's ``match:`` becomes a :class:`MatchSpec`: one :class:`PathMatch` plus optional methods and exact header
values. The config loader wraps each route in an :class:`Entry` and builds one :class:`RouteTable` per config
generation; the table is immutable and is replaced as a whole on reload.

Path kinds (the path is already normalised by :mod:`gateway.paths`)::

    exact     path == value
    prefix    segment-aware: "/api/likes" matches /api/likes, /api/likes/, /api/likes/1, never /api/likesX;
              a trailing "/" in the value is insignificant; "/" matches everything
    template  "/api/products/{id}/reviews": each {name} is one whole, non-empty segment; the segment count
              must be equal, so a trailing "/" on the request makes a different path
    regex     re.fullmatch on the path; named groups become params

Precedence, as one sort key per entry (:func:`precedence_key`, smaller first)::

    (-priority, kind class, -literal length, template before prefix, methods first, -header count, file order)

    kind class: exact 0; template and prefix 1 (ranked together by literal length); regex 2.

The first route in that order whose path, method and headers all match wins. ``None`` means "use the fallback".

Index. Per-request cost does not depend on the number of routes, except for regex routes:

- exact routes: a dict from path to its routes;
- prefix routes: a trie of literal segments; every node on the request path's walk holds candidates;
- template routes: a trie with literal children and one parameter child per node; a request walks it
  depth first (literal child, then parameter child), skipping subtrees that cannot beat the best so far;
- regex routes: a list, tried in rank order only while a regex route could still outrank the best candidate
  (normally none: they rank last unless ``priority`` lifts them).

Every candidate list is sorted by rank, so the first route in a list that accepts the method and headers is
that list's best; the winner is the best of those. Ranks are compared as integers (position in the sorted
table), never as tuples, on the request path, and a route without params answers with one shared
:class:`Match`, so a typical lookup allocates only the list of path segments.

Results::

    match(method, path, headers)  -> Match(entry, params) | None       None: use the fallback
    explain(method, path, headers) -> [Considered(entry, rank, reason, detail, params)] in precedence order,
                                     reason in chosen | outranked | path | method | header
    unreachable()                 -> [(hidden, by)]: ``by`` ranks first and matches all that ``hidden`` matches
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.routing.paths import PathError, normalize_path

__all__ = [
    "KINDS", "Considered", "Entry", "Match", "MatchSpec", "PathMatch", "RouteTable", "precedence_key",
]

KINDS = ("exact", "prefix", "template", "regex")
_KIND_CLASS = {"exact": 0, "template": 1, "prefix": 1, "regex": 2}
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PathMatch:
    """How a route matches the path. Build with :meth:`create`; the constructor validates too."""

    kind: str
    value: str
    # Derived once, at construction. Template: one entry per segment, None for a parameter. Prefix: the
    # literal segments of the value without its trailing "/" (empty for "/").
    segments: tuple[str | None, ...] = field(init=False, repr=False, compare=False)
    param_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    @classmethod
    def create(cls, kind: str, value: str) -> PathMatch:
        """Validated constructor; raises ValueError saying what was expected."""
        return cls(kind, value)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"path match kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.value, str) or not self.value:
            raise ValueError(f"{self.kind} path must be a non-empty string, got {self.value!r}")
        segments: tuple[str | None, ...] = ()
        names: tuple[str, ...] = ()
        regex = None
        if self.kind == "regex":
            regex = _compile_regex(self.value)
        elif self.kind == "template":
            segments, names = _parse_template(self.value)
        else:
            _require_normal(self.kind, self.value)
            if self.kind == "prefix":
                prefix = _canonical_prefix(self.value)
                segments = tuple(prefix[1:].split("/")) if prefix != "/" else ()
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "param_names", names)
        object.__setattr__(self, "regex", regex)

    @property
    def literal_length(self) -> int:
        """Length of the literal part, for precedence.

        exact: len(value). prefix: len(value) without a trailing "/" ("/api/" ranks as "/api", since it matches
        the same requests), "/" counts 1. template: len(value) without the "{name}" parameters. regex: 0.
        """
        if self.kind == "exact":
            return len(self.value)
        if self.kind == "prefix":
            return len(_canonical_prefix(self.value))
        if self.kind == "template":
            return len(self.value) - sum(len(name) + 2 for name in self.param_names)
        return 0

    def matches(self, path: str) -> Mapping[str, str] | None:
        """Params if the normalised ``path`` matches (template params, regex named groups, else empty), or None.

        The straightforward check, used by :meth:`RouteTable.explain`; :meth:`RouteTable.match` uses the index.
        """
        if self.kind == "exact":
            return _NO_PARAMS if path == self.value else None
        if self.kind == "prefix":
            prefix = _canonical_prefix(self.value)
            ok = prefix == "/" or path == prefix or path.startswith(prefix + "/")
            return _NO_PARAMS if ok else None
        if self.kind == "template":
            return _template_params(self.segments, self.param_names, path[1:].split("/"))
        assert self.regex is not None
        m = self.regex.fullmatch(path)
        return None if m is None else _regex_params(m)

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass(frozen=True, slots=True)
class MatchSpec:
    """A route's whole ``match:``. Methods are upper-case (None: any); headers are (lower-case name, value)."""

    path: PathMatch
    methods: frozenset[str] | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.methods is not None:
            if not self.methods:
                raise ValueError("methods must list at least one method (omit it to match any method)")
            # HTTP methods are case-sensitive (RFC 9110 §9.1); the config spells them upper-case.
            object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        headers = tuple((name.lower(), value) for name, value in self.headers)
        names = [name for name, _ in headers]
        if len(set(names)) != len(names):
            raise ValueError(f"each header may be matched once, got {names}")
        object.__setattr__(self, "headers", headers)


@dataclass(frozen=True, slots=True)
class Entry:
    """One route as the table sees it; ``target`` is returned untouched on a match."""

    name: str
    match: MatchSpec
    order: int
    priority: int | None = None
    target: object = None


@dataclass(frozen=True, slots=True)
class Match:
    """The winning route for a request. ``params`` are template params (or regex named groups), still
    percent-encoded as in the path."""

    entry: Entry
    params: Mapping[str, str]

    @property
    def why(self) -> str:
        """Short machine-readable reason: ``template:/api/products/{id}/reviews methods=GET,POST ...``."""
        return _describe(self.entry)


@dataclass(frozen=True, slots=True)
class Considered:
    """One line of :meth:`RouteTable.explain`.

    ``reason``: ``chosen`` (this route answers), ``outranked`` (matched, but a route before it won), or what
    did not match: ``path``, ``method``, ``header``. ``detail`` says it in words.
    """

    entry: Entry
    rank: tuple[int, ...]
    reason: str
    detail: str
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)

    @property
    def matched(self) -> bool:
        return self.reason in ("chosen", "outranked")

    @property
    def chosen(self) -> bool:
        return self.reason == "chosen"


def precedence_key(entry: Entry) -> tuple[int, int, int, int, int, int, int]:
    """The rank tuple of an entry; the table is ordered by it, smallest first."""
    path = entry.match.path
    kind_class = _KIND_CLASS[path.kind]
    return (
        -(entry.priority or 0),
        kind_class,
        -path.literal_length if kind_class == 1 else 0,
        1 if path.kind == "prefix" else 0,       # equal literal length: template before prefix
        0 if entry.match.methods is not None else 1,
        -len(entry.match.headers),
        entry.order,
    )


class RouteTable:
    """An immutable, indexed route table. Build once per config generation."""

    def __init__(self, entries: Sequence[Entry], fallback: object = None) -> None:
        self.fallback = fallback
        ranked = sorted(entries, key=precedence_key)
        self._ordered = [_Candidate(entry, pos) for pos, entry in enumerate(ranked)]
        self._exact: dict[str, list[_Candidate]] = {}
        self._prefixes = _Node()
        self._templates = _Node()
        self._regexes: list[_Candidate] = []
        for cand in self._ordered:  # in rank order, so every list below stays sorted
            self._index(cand)
        self._has_prefixes = self._prefixes.min_pos is not None
        self._has_templates = self._templates.min_pos is not None

    def ordered(self) -> list[Entry]:
        """Entries in precedence order."""
        return [c.entry for c in self._ordered]

    def match(self, method: str, path: str, headers: Mapping[str, str]) -> Match | None:
        """The winning route for a request, or None (use the fallback).

        ``path`` must be normalised. ``headers`` must look names up case-insensitively (aiohttp's
        CIMultiDictProxy does); a plain ``dict`` is searched case-insensitively as a slower fallback.
        """
        best = None
        exact = self._exact.get(path)
        if exact is not None:
            best = _first(exact, None, method, headers)
        segments = path[1:].split("/")
        if self._has_prefixes:
            best = self._walk_prefixes(segments, best, method, headers)
        if self._has_templates:
            best = _walk_templates(self._templates, segments, 0, best, method, headers)
        regex_match = None
        for cand in self._regexes:
            if best is not None and cand.pos > best.pos:
                break
            if cand.accepts(method, headers):
                regex_match = cand.regex.fullmatch(path)
                if regex_match is not None:
                    best = cand
                    break
        if best is None:
            return None
        if regex_match is not None:
            params = _regex_params(regex_match)
            return Match(best.entry, params) if params else best.bare_match
        if best.param_slots:
            # The walk already proved the match; only pick the parameter segments.
            return Match(best.entry, {name: segments[i] for i, name in best.param_slots})
        return best.bare_match  # immutable, so one instance per route serves every request

    def explain(self, method: str, path: str, headers: Mapping[str, str]) -> list[Considered]:
        """Every route in precedence order, whether it matched and why not; at most one is ``chosen``.

        No route chosen means the request goes to the fallback.
        """
        out: list[Considered] = []
        chosen = False
        for cand in self._ordered:
            params = cand.entry.match.path.matches(path)
            if params is None:
                reason, detail = "path", f"path {path!r} does not match {cand.entry.match.path}"
            else:
                reason, detail = cand.refusal(method, headers)
                if not reason:
                    reason = "outranked" if chosen else "chosen"
                    detail = "a route earlier in precedence order matched first" if chosen else "first match"
                    chosen = True
            out.append(Considered(cand.entry, cand.rank, reason, detail, params or _NO_PARAMS))
        return out

    def unreachable(self) -> list[tuple[Entry, Entry]]:
        """``(hidden, by)`` pairs: ``hidden`` can never match because ``by`` ranks before it and matches every
        request ``hidden`` matches. Conservative: only provable cases are reported (a regex is never proven to
        cover a prefix or template, for instance)."""
        out = []
        for cand in self._ordered:
            by = min((a for a in self._covering_paths(cand) if a.pos < cand.pos and a.covers_restrictions(cand)),
                     key=lambda a: a.pos, default=None)
            if by is not None:
                out.append((cand.entry, by.entry))
        return out

    # -- building -------------------------------------------------------------------------------------------

    def _index(self, cand: _Candidate) -> None:
        kind = cand.entry.match.path.kind
        if kind == "exact":
            self._exact.setdefault(cand.entry.match.path.value, []).append(cand)
        elif kind == "prefix":
            self._insert(self._prefixes, cand)
        elif kind == "template":
            self._insert(self._templates, cand)
        else:
            self._regexes.append(cand)

    @staticmethod
    def _insert(node: _Node, cand: _Candidate) -> None:
        for segment in cand.segments:
            if node.min_pos is None:
                node.min_pos = cand.pos
            if segment is None:
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.children.setdefault(segment, _Node())
        if node.min_pos is None:
            node.min_pos = cand.pos
        node.routes.append(cand)

    # -- matching -------------------------------------------------------------------------------------------

    def _walk_prefixes(self, segments: list[str], best: _Candidate | None, method: str,
                       headers: Mapping[str, str]) -> _Candidate | None:
        node: _Node | None = self._prefixes
        for segment in segments:
            if node.routes:
                best = _first(node.routes, best, method, headers)
            node = node.children.get(segment)
            if node is None:
                return best
        if node.routes:
            best = _first(node.routes, best, method, headers)
        return best

    # -- unreachable ----------------------------------------------------------------------------------------

    def _covering_paths(self, cand: _Candidate) -> Iterator[_Candidate]:
        """Routes whose path matches every path ``cand`` matches (restrictions not considered yet)."""
        path = cand.entry.match.path
        if path.kind == "exact" or (path.kind == "template" and not path.param_names):
            yield from self._all_matching(path.value)
        elif path.kind == "prefix":
            yield from _prefix_walk(self._prefixes, path.segments)
        elif path.kind == "template":
            leading = []
            for segment in path.segments:
                if segment is None or segment == "":
                    break
                leading.append(segment)
            yield from _prefix_walk(self._prefixes, leading)
            yield from _template_cover(self._templates, path.segments, 0)
        else:
            yield from self._prefixes.routes  # only prefix "/" is certain to cover a regex

    def _all_matching(self, path: str) -> Iterator[_Candidate]:
        segments = path[1:].split("/")
        yield from self._exact.get(path, ())
        yield from _prefix_walk(self._prefixes, segments)
        yield from _template_cover(self._templates, segments, 0)
        yield from (c for c in self._regexes if c.regex.fullmatch(path))


class _Node:
    """A trie node. ``routes`` end here (sorted by rank); ``min_pos`` is the best rank in the subtree."""

    __slots__ = ("children", "param", "routes", "min_pos")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: list[_Candidate] = []
        self.min_pos: int | None = None


class _Candidate:
    """An entry prepared for the request path: rank as an int, restrictions unpacked."""

    __slots__ = ("entry", "pos", "rank", "methods", "headers", "segments", "param_slots", "regex", "bare_match")

    def __init__(self, entry: Entry, pos: int) -> None:
        self.entry = entry
        self.pos = pos
        self.rank = precedence_key(entry)
        self.methods = entry.match.methods
        self.headers = entry.match.headers
        self.segments = entry.match.path.segments
        # (segment index, name) of each template parameter
        self.param_slots = tuple(zip((i for i, s in enumerate(self.segments) if s is None),
                                     entry.match.path.param_names, strict=True))
        self.regex = entry.match.path.regex
        self.bare_match = Match(entry, _NO_PARAMS)

    def accepts(self, method: str, headers: Mapping[str, str]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        for name, value in self.headers:
            if _header(headers, name) != value:
                return False
        return True

    def refusal(self, method: str, headers: Mapping[str, str]) -> tuple[str, str]:
        """("", "") if method and headers are accepted, else (reason, detail) for explain."""
        if self.methods is not None and method not in self.methods:
            return "method", f"method {method} is not one of {', '.join(sorted(self.methods))}"
        for name, value in self.headers:
            got = _header(headers, name)
            if got != value:
                seen = "missing" if got is None else f"{got!r}"
                return "header", f"header {name} is {seen}, expected {value!r}"
        return "", ""

    def covers_restrictions(self, other: _Candidate) -> bool:
        """Every method/header combination ``other`` accepts, this one accepts too."""
        if self.methods is not None and (other.methods is None or not other.methods <= self.methods):
            return False
        required = dict(other.headers)
        return all(required.get(name) == value for name, value in self.headers)


def _first(cands: list[_Candidate], best: _Candidate | None, method: str,
           headers: Mapping[str, str]) -> _Candidate | None:
    """The first candidate accepting the request if it beats ``best``; else ``best``."""
    for cand in cands:
        if best is not None and cand.pos > best.pos:
            return best
        if cand.accepts(method, headers):
            return cand
    return best


def _walk_templates(node: _Node, segments: list[str], i: int, best: _Candidate | None, method: str,
                    headers: Mapping[str, str]) -> _Candidate | None:
    if node.min_pos is None or (best is not None and node.min_pos > best.pos):
        return best  # nothing in this subtree can beat the best so far
    if i == len(segments):
        return _first(node.routes, best, method, headers) if node.routes else best
    segment = segments[i]
    child = node.children.get(segment)
    if child is not None:
        best = _walk_templates(child, segments, i + 1, best, method, headers)
    if segment and node.param is not None:  # a parameter is one non-empty segment
        best = _walk_templates(node.param, segments, i + 1, best, method, headers)
    return best


def _prefix_walk(node: _Node, segments: Iterable[str | None]) -> Iterator[_Candidate]:
    """All prefix routes that are ancestors of (or equal to) the literal ``segments``."""
    yield from node.routes
    for segment in segments:
        child = node.children.get(segment) if segment is not None else None
        if child is None:
            return
        node = child
        yield from node.routes


def _template_cover(node: _Node, pattern: Sequence[str | None], i: int) -> Iterator[_Candidate]:
    """Template routes matching every path of ``pattern`` (literal segments, None = any non-empty segment)."""
    if i == len(pattern):
        yield from node.routes
        return
    segment = pattern[i]
    if segment is not None and segment in node.children:
        yield from _template_cover(node.children[segment], pattern, i + 1)
    if segment != "" and node.param is not None:
        yield from _template_cover(node.param, pattern, i + 1)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and type(headers) is dict:
        # Plain dicts are case-sensitive; HTTP field names are not (RFC 9110 §5.1).
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def _template_params(pattern: tuple[str | None, ...], names: tuple[str, ...],
                     segments: list[str]) -> Mapping[str, str] | None:
    if len(segments) != len(pattern):
        return None
    values = []
    for want, got in zip(pattern, segments, strict=True):
        if want is None:
            if not got:
                return None
            values.append(got)
        elif want != got:
            return None
    return dict(zip(names, values, strict=True)) if names else _NO_PARAMS


def _regex_params(m: re.Match[str]) -> Mapping[str, str]:
    groups = m.groupdict()
    if not groups:
        return _NO_PARAMS
    return {name: value for name, value in groups.items() if value is not None}


def _canonical_prefix(value: str) -> str:
    return value.rstrip("/") or "/"


def _require_normal(kind: str, value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{kind} path must start with '/', got {value!r}")
    try:
        normal = normalize_path(value)
    except PathError as exc:
        raise ValueError(f"{kind} path {value!r} is not a valid path: {exc}") from exc
    if normal != value:
        raise ValueError(
            f"{kind} path {value!r} is not in normal form and would never match a request; write {normal!r}")


def _compile_regex(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"regex {value!r} does not compile: {exc}") from exc


def _parse_template(value: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    if not value.startswith("/"):
        raise ValueError(f"template path must start with '/', got {value!r}")
    segments: list[str | None] = []
    names: list[str] = []
    for segment in value[1:].split("/"):
        if segment.startswith("{") and segment.endswith("}") and len(segment) > 1:
            name = segment[1:-1]
            if not name.isidentifier():
                raise ValueError(f"template {value!r}: parameter {segment!r} must be {{name}} with name an "
                                 f"identifier (letters, digits, _)")
            if name in names:
                raise ValueError(f"template {value!r}: parameter {{{name}}} appears twice")
            names.append(name)
            segments.append(None)
        elif "{" in segment or "}" in segment:
            raise ValueError(f"template {value!r}: a parameter must be a whole segment like /{{id}}/, "
                             f"got {segment!r}")
        else:
            segments.append(segment)
    # Literal segments must already be normal, or the template could never match a normalised path.
    probe = "/" + "/".join("p" if s is None else s for s in segments)
    try:
        normal = normalize_path(probe)
    except PathError as exc:
        raise ValueError(f"template path {value!r} is not a valid path: {exc}") from exc
    if normal != probe:
        raise ValueError(f"template path {value!r} is not in normal form (empty or dot segment, or an escape "
                         f"that normalises differently) and would never match a request")
    return tuple(segments), tuple(names)


def _describe(entry: Entry) -> str:
    spec = entry.match
    parts = [f"{spec.path.kind}:{spec.path.value}"]
    if spec.methods is not None:
        parts.append("methods=" + ",".join(sorted(spec.methods)))
    if spec.headers:
        parts.append("headers=" + ",".join(name for name, _ in spec.headers))
    if entry.priority:
        parts.append(f"priority={entry.priority}")
    return " ".join(parts)

