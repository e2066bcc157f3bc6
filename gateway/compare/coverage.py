"""Whether a route's compare rules cover a reported field: the report shows a field that an ignore rule now covers
as ignored, not as a mismatch still to fix (the counts were taken before the rule existed)."""

from __future__ import annotations

from gateway.compare.paths import PathSyntaxError, parse_path
from gateway.compare.rules import CompareRules


def ignored_by(rules: CompareRules | None, field: str) -> bool:
    """True when an ``ignore:`` rule (or ``headers_ignore``) of ``rules`` covers ``field``: a collapsed JSON path
    such as ``$.items[*].created_at``, or ``header:NAME``."""
    if rules is None:
        return False
    if field.startswith("header:"):
        name = field[len("header:"):].lower()
        return name in rules.ignore_headers or name.startswith(rules.ignore_header_prefixes)
    if not field.startswith("$"):
        return False      # "status", "body": never ignorable by a path
    try:
        steps = parse_path(field)
    except PathSyntaxError:
        return False
    paths = rules.ignore_set
    states = paths.start()
    for kind, arg in steps:
        # A field's "[*]" stands for every index: walk it as index 0, which "[*]" and "*" rules match.
        seg: str | int = 0 if kind != "key" else str(arg)
        states = paths.step(states, seg)
        if not states:
            return False
        if paths.first_done(states) is not None:
            return True      # an ignore path ignores its whole subtree
    return paths.first_done(states) is not None
