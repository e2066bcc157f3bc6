"""The outcome of a comparison: each :class:`Difference`, the two buckets they go into, and the verdict.

Every Difference lands in one of two buckets: ``differences`` (they count) or ``ignored`` (excluded by an
ignore rule or a learned noise field, or a note such as ``truncated``). The verdict follows: nothing at all is
``match``, only ignored ones is ``ignored``, anything counted is ``mismatch``. At most ``max_differences``
differences of each bucket are listed; the rest are counted in one ``omitted`` difference whose ``legacy``
value is how many were left out.

The comparers (headers, bodies) report to a :class:`Sink`: the :class:`Collector` that ``compare`` reads the
verdict from, the :class:`FieldCollector` of noise learning, or the JSON walk's probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from gateway.compare.paths import Node, render

PREVIEW_CHARS = 200                  # long values in a Difference are cut to this many characters

MATCH, MISMATCH, IGNORED = "match", "mismatch", "ignored"


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


class Sink(Protocol):
    """Where comparers report differences: ``add`` with the path already rendered, ``add_json`` with a JSON
    node, rendered only if the difference is kept. ``ignored``: excluded by an ignore rule or learned noise."""

    def add(self, path: str, field: str, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        ...

    def add_json(self, node: Node, kind: str, legacy: object, shadow: object, ignored: bool) -> None: ...


class Collector:
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
            bucket.append(Difference(render(node, collapse=False), render(node, collapse=True), kind,
                                     _preview(legacy), _preview(shadow)))

    def result(self) -> Comparison:
        for ignored, bucket in ((False, self.counted), (True, self.ignored)):
            if self.omitted[ignored]:
                bucket.append(Difference("body", "body", "omitted", self.omitted[ignored], None))
        verdict = MISMATCH if self.counted else IGNORED if self.ignored else MATCH
        return Comparison(verdict, tuple(self.counted), tuple(self.ignored))


class FieldCollector:
    """For noise learning: only the set of fields that differ matters."""

    def __init__(self) -> None:
        self.fields: set[str] = set()

    def add(self, path: str, field: str, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            self.fields.add(field)

    def add_json(self, node: Node, kind: str, legacy: object, shadow: object, ignored: bool) -> None:
        if not ignored:
            self.fields.add(render(node, collapse=True))


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
