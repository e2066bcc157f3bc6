"""How a route matches a request: its ``match:`` as a :class:`MatchSpec`, one :class:`PathMatch` plus optional
methods and exact header values.

Path kinds (the path is already normalised by :mod:`gateway.routing.paths`)::

    exact     path == value
    prefix    segment-aware: "/api/likes" matches /api/likes, /api/likes/, /api/likes/1, never /api/likesX;
              a trailing "/" in the value is insignificant; "/" matches everything
    template  "/api/products/{id}/reviews": each {name} is one whole, non-empty segment; the segment count
              must be equal, so a trailing "/" on the request makes a different path
    regex     re.fullmatch on the path; named groups become params

:meth:`PathMatch.matches` is the straightforward check of one path; :class:`~gateway.routing.index.RouteTable`
indexes many.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.routing.paths import PathError, normalize_path

KINDS = ("exact", "prefix", "template", "regex")
NO_PARAMS: Mapping[str, str] = MappingProxyType({})


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
            return NO_PARAMS if path == self.value else None
        if self.kind == "prefix":
            prefix = _canonical_prefix(self.value)
            ok = prefix == "/" or path == prefix or path.startswith(prefix + "/")
            return NO_PARAMS if ok else None
        if self.kind == "template":
            return _template_params(self.segments, self.param_names, path[1:].split("/"))
        assert self.regex is not None
        m = self.regex.fullmatch(path)
        return None if m is None else regex_params(m)

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
    return dict(zip(names, values, strict=True)) if names else NO_PARAMS


def regex_params(m: re.Match[str]) -> Mapping[str, str]:
    groups = m.groupdict()
    if not groups:
        return NO_PARAMS
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
