"""The route table: which route answers a request, and why.

``gateway.routing.table.Table`` wraps each route in an :class:`~gateway.routing.precedence.Entry` and builds
one :class:`RouteTable` per config generation; the table is immutable and is replaced as a whole on reload. The first
route in precedence order (:mod:`gateway.routing.precedence`) whose path, method and headers all match wins.
``None`` means "use the fallback".

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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.routing.matching import NO_PARAMS, regex_params
from gateway.routing.precedence import Entry, precedence_key


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
    params: Mapping[str, str] = field(default_factory=lambda: NO_PARAMS)

    @property
    def matched(self) -> bool:
        return self.reason in ("chosen", "outranked")

    @property
    def chosen(self) -> bool:
        return self.reason == "chosen"


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
            params = regex_params(regex_match)
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
            out.append(Considered(cand.entry, cand.rank, reason, detail, params or NO_PARAMS))
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
        self.bare_match = Match(entry, NO_PARAMS)

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
