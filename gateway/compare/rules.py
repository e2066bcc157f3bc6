"""What a comparison is given: each side's captured answer, and the route's compare rules, compiled once per
config generation.

:func:`compile_rules` checks every rule and compiles the JSON paths (``ignore`` and ``unordered``, in the
grammar of :mod:`gateway.compare.paths`) and the header rules (``header:NAME``, or ``header:PREFIX*``); the
first bad entry raises a :class:`RuleError` naming it. :func:`with_noise` adds learned noise fields to the
ignore paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gateway.compare.paths import PathSet, PathSyntaxError, Pattern, parse_path

_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 9110 §5.6.2 token


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
class CompareRules:
    """Compiled compare rules of one route; build with :func:`compile_rules` once per config generation."""

    ignore: tuple[str, ...] = ()                 # JSON ignore paths as written
    unordered: tuple[tuple[str, str | None], ...] = ()   # (path, by)
    tolerance: float = 0.0
    ignore_headers: frozenset[str] = frozenset()           # lower-case names
    ignore_header_prefixes: tuple[str, ...] = ()           # from "header:X-Foo-*"
    headers_compare: bool = True
    max_differences: int = 100
    ignore_set: PathSet = PathSet()
    unordered_set: PathSet = PathSet()


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
        max_differences=max_differences, ignore_set=PathSet.of(patterns),
        unordered_set=PathSet.of(_compile_path(path, "unordered") for path, _ in unordered_rules),
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
        return parse_path(text)
    except PathSyntaxError as exc:
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
def with_noise(base: PathSet, noise: frozenset[str]) -> PathSet:
    """The ignore paths plus the learned JSON noise fields (fields are valid paths by construction)."""
    extra: list[Pattern] = []
    for field in sorted(noise):
        if field.startswith("$"):
            try:
                extra.append(parse_path(field))
            except PathSyntaxError:
                continue   # noise comes from storage; a stale or foreign entry must not break comparison
    return PathSet.of(base.patterns + tuple(extra)) if extra else base
