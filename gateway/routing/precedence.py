"""Route precedence: a route as the route table sees it (:class:`Entry`), and its rank.

Precedence, as one sort key per entry (:func:`precedence_key`, smaller first)::

    (-priority, kind class, -literal length, template before prefix, methods first, -header count, file order)

    kind class: exact 0; template and prefix 1 (ranked together by literal length); regex 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.routing.matching import MatchSpec

_KIND_CLASS = {"exact": 0, "template": 1, "prefix": 1, "regex": 2}


@dataclass(frozen=True, slots=True)
class Entry:
    """One route as the table sees it; ``target`` is returned untouched on a match."""

    name: str
    match: MatchSpec
    order: int
    priority: int | None = None
    target: object = None


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
