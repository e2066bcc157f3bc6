"""JSON paths in compare rules: the grammar, the compiled set matched during the walk, and the concrete paths
that differences are reported at.

A JSON difference is reported at a concrete path (``$.items[3].created_at``) and counted under its *field*,
the path with array indices collapsed (``$.items[*].created_at``). Keys that are not identifiers are quoted:
``$['a b']``. Fields are themselves valid ignore paths, which is how learned noise is applied.

Ignore and unordered paths use this grammar (a JSONPath subset)::

    path     := "$" segment*
    segment  := "." name | ".*" | "[" selector "]" | ".." ( name | "*" | "[" selector "]" )
    selector := digits | "*" | "'" chars "'" | '"' chars '"'      (backslash escapes the next char)
    name     := a letter or "_", then letters, digits, "_" or "-"

``*`` matches any key or index, ``..`` any number (zero or more) of levels. An ignore path ignores the whole
subtree it selects. Filters, slices, unions and negative indices are rejected with a :class:`PathSyntaxError`,
which the rules compiler reports as a ``RuleError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_KEY, _INDEX, _ANY, _DESCEND = "key", "index", "any", "descend"
Step = tuple[str, str | int | None]
Pattern = tuple[Step, ...]
State = tuple[int, int]            # (pattern number, position of the next step in it)
States = frozenset[State]
NO_STATES: States = frozenset()

_NAME = re.compile(r"[^\W\d][\w-]*")
_DIGITS = re.compile(r"\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PathSyntaxError(Exception):
    """A path that does not parse: ``message`` says why, ``offset`` where."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def parse_path(text: str) -> Pattern:
    if not text.startswith("$"):
        raise PathSyntaxError(0, "a JSON path starts with '$' (or use 'header:NAME' for a header)")
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
            raise PathSyntaxError(i, f"unexpected {text[i]!r}; expected '.', '..' or '['")
        steps.append(step)
    return tuple(steps)


def _parse_selector(text: str, i: int, *, after_dot: bool) -> tuple[Step, int]:
    if i < len(text) and text[i] == "*":
        return (_ANY, None), i + 1
    if i < len(text) and text[i] == "[":
        return _parse_bracket(text, i)
    if not after_dot:
        raise PathSyntaxError(i, "expected '['")
    m = _NAME.match(text, i)
    if m is None:
        if i < len(text) and text[i].isdigit():
            raise PathSyntaxError(i, "a name cannot start with a digit: use [N] for an index or ['N'] for a "
                                     "key")
        raise PathSyntaxError(i, "expected a name, '*' or '[' after '.'")
    return (_KEY, m.group()), m.end()


def _parse_bracket(text: str, i: int) -> tuple[Step, int]:
    j = i + 1
    if j >= len(text):
        raise PathSyntaxError(i, "unterminated '['; expected an index, '*' or a quoted key")
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
        raise PathSyntaxError(j, "negative indices are not supported")
    elif c == "?":
        raise PathSyntaxError(j, "filter expressions are not supported")
    else:
        raise PathSyntaxError(j, "expected an index, '*' or a quoted key inside '[...]'")
    if j >= len(text) or text[j] != "]":
        if j < len(text) and text[j] in ":,":
            raise PathSyntaxError(j, "slices and unions are not supported")
        raise PathSyntaxError(j, "expected ']'")
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
    raise PathSyntaxError(i, f"unterminated quoted key; expected a closing {quote}")


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


def render(node: Node, *, collapse: bool) -> str:
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
class PathSet:
    """A set of compiled paths, matched during the walk as an NFA: the walk carries the active states."""

    patterns: tuple[Pattern, ...] = ()
    indexed: bool = False   # some pattern names a specific index: steps over indices depend on the index

    @classmethod
    def of(cls, patterns: Iterable[Pattern]) -> PathSet:
        patterns = tuple(patterns)
        return cls(patterns, any(kind == _INDEX for p in patterns for kind, _ in p))

    def start(self) -> States:
        return frozenset((p, 0) for p in range(len(self.patterns)))

    def step(self, states: States, seg: str | int) -> States:
        if not states:
            return NO_STATES
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
