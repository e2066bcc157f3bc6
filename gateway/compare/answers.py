"""Compare a legacy response with its shadow: the entry points of the comparison in the ``shadow`` stage.

Each side's response is a :class:`~gateway.compare.rules.Captured` (status, headers, body as the gateway
captured it, perhaps cut at the capture cap). :func:`compare` looks at three layers and turns every divergence
into a :class:`~gateway.compare.verdict.Difference`:

1. **status**;
2. **headers**, case-insensitively, each by what it means (:mod:`gateway.compare.headers`);
3. **body**, by content type once its ``Content-Encoding`` is undone (:mod:`gateway.compare.bodies`): JSON
   semantically (:mod:`gateway.compare.jsondiff`), text by lines, anything else by length and SHA-256
   (:mod:`gateway.compare.textdiff`).

:func:`noisy_fields` compares two answers of the legacy backend to the same request: the fields that differ
there change by themselves (timestamps, generated ids) and are passed back to :func:`compare` as ``noise``;
differences on them are ignored.

The comparison is pure: no I/O, no clock, no event loop. Rules are compiled once per config generation by
``compile_rules``; :func:`compare` does work linear in the size of the bodies, apart from the sorting of
unordered arrays compared with a tolerance.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.compare.bodies import Side, body_mode
from gateway.compare.headers import body_bytes_headers_skipped, compare_headers
from gateway.compare.jsondiff import compare_json
from gateway.compare.paths import PathSet
from gateway.compare.rules import Captured, CompareRules, with_noise
from gateway.compare.textdiff import compare_binary, compare_prefix, compare_text
from gateway.compare.verdict import Collector, Comparison, FieldCollector, Sink


def compare(legacy: Captured, shadow: Captured, rules: CompareRules, noise: Collection[str] = ()) -> Comparison:
    """Compare the legacy response with the shadow's; differences on ``noise`` fields are ignored."""
    noise_set = frozenset(noise)
    out = Collector(noise_set, rules.max_differences)
    ignore = with_noise(rules.ignore_set, noise_set) if noise_set else rules.ignore_set
    _compare_into(legacy, shadow, rules, ignore, out, learning=False)
    return out.result()


def noisy_fields(first: Captured, second: Captured, rules: CompareRules) -> frozenset[str]:
    """Fields that differ between two answers of the same backend to the same request: noise."""
    out = FieldCollector()
    _compare_into(first, second, rules, rules.ignore_set, out, learning=True)
    return frozenset(out.fields)


def _compare_into(legacy: Captured, shadow: Captured, rules: CompareRules, ignore: PathSet, out: Sink,
                  *, learning: bool) -> None:
    if legacy.status != shadow.status:
        out.add("status", "status", "changed", legacy.status, shadow.status, False)
    a, b = Side.of(legacy), Side.of(shadow)
    mode = body_mode(a, b)
    if rules.headers_compare:
        compare_headers(a, b, rules, body_bytes_headers_skipped(a, b, mode), out)
    if mode == "prefix":
        compare_prefix(a, b, out)
    elif mode == "raw":
        compare_binary(a, b, out)
    elif a.body == b.body:
        return
    elif mode == "json":
        compare_json(a, b, rules, ignore, out, learning)
    elif mode == "text":
        compare_text(a, b, out)
    else:
        compare_binary(a, b, out)
