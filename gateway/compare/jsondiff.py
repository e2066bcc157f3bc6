"""JSON bodies compared structurally: both documents parsed and walked in step, under the ignore paths, the
unordered arrays and the numeric tolerance of the rules.

Arrays are compared index by index; a surplus on one side is reported per index as ``missing``/``extra``. An
``unordered`` array is compared as a multiset: each element is reduced to a canonical, hashable form (ignored
subtrees dropped, object keys sorted, nested unordered arrays sorted, ``1`` and ``1.0`` equal) and elements
are matched through a hash table, O(n). Unmatched elements are reported as ``missing``/``extra``. With a
``tolerance`` the canonical forms of nearly equal numbers differ, so the unmatched remainder is sorted by
canonical form and paired by a merge walk that accepts pairs equal within the tolerance, O(n log n): best
effort, since sorting may separate two elements that are close in value. With ``by: KEY`` elements are paired
by the value of that key and compared field by field; elements lacking the key fall back to the multiset.

Tolerance is absolute only (``|a - b| <= tolerance``): the differences it exists for are rounding differences
(a price to 2 or 3 decimals, a float average), which are absolute; it applies to every number.

When learning noise, the unmatched elements of unordered arrays are paired in their original order and
compared field by field, so that noise is learned per field, not per whole element.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from gateway.compare.bodies import Side, body_text
from gateway.compare.paths import NO_STATES, Node, PathSet, States
from gateway.compare.rules import CompareRules
from gateway.compare.textdiff import compare_binary, compare_text
from gateway.compare.verdict import Sink

_NOT_JSON = object()


def _parse_json(side: Side) -> tuple[Any, str | None]:
    try:
        if side.charset and side.charset.replace("-", "").replace("_", "") not in ("utf8", "utf16", "utf32"):
            return json.loads(body_text(side)), None
        return json.loads(side.body), None
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _NOT_JSON, str(exc) or type(exc).__name__


def compare_json(a: Side, b: Side, rules: CompareRules, ignore: PathSet, out: Sink, learning: bool) -> None:
    if not a.body or not b.body:
        kind = "missing" if a.body else "extra"
        out.add("body", "body", kind, body_text(a), body_text(b), False)
        return
    va, err_a = _parse_json(a)
    vb, err_b = _parse_json(b)
    if err_a and err_b:
        compare_text(a, b, out)   # neither side is JSON: the lines say more than two parse errors
        return
    if err_a or err_b:
        out.add("body", "body", "invalid_json", f"invalid JSON: {err_a}" if err_a else body_text(a),
                f"invalid JSON: {err_b}" if err_b else body_text(b), False)
        return
    try:
        _JsonWalk(rules, ignore, out, learning).run(va, vb)
    except RecursionError:
        # Nesting deeper than the interpreter allows to walk: fall back to bytes rather than fail.
        compare_binary(a, b, out)


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


class _JsonWalk:
    """Walks two parsed documents in step, carrying the ignore and unordered NFA states of each node."""

    def __init__(self, rules: CompareRules, ignore: PathSet, out: Sink, learning: bool) -> None:
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
        self.value(a, b, None, NO_STATES if ignored else ist, self.unordered.start(), ignored)

    def descend(self, ist: States, ust: States, ignored: bool, seg: str | int) -> tuple[States, States, bool]:
        cust = self.unordered_step(ust, seg) if ust else ust
        if ignored or not ist:
            return NO_STATES, cust, ignored
        cist, done = self.ignore_step(ist, seg)
        if done:
            return NO_STATES, cust, True   # the whole subtree is ignored; no need to track states below
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
                index.setdefault(self.canon(y[by], NO_STATES, NO_STATES), []).append(j)
            else:
                keyless_b.append(j)
        keyless_a: list[int] = []
        missing: list[int] = []
        for i, x in enumerate(a):
            if type(x) is dict and by in x:
                candidates = index.get(self.canon(x[by], NO_STATES, NO_STATES))
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
