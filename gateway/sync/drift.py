"""Which shadow mismatches are data drift rather than a difference between the services.

A shadow read of an entity that a mirrored write of the same path was still on its way to (journaled before the
read, delivered to the other side only after it) compares two databases that did not hold the same data yet: the
mismatch says nothing about the new service. ``classify`` tells those apart from the rest, for the report. It can
only judge writes that went through the journal: drift from writes made before ``sync:`` was on is not seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SLACK = 0.05   # seconds: clocks of the sample and the journal entry are the same machine's, read apart


def classify(samples: Iterable[dict[str, Any]], writes: Iterable[tuple[str, float, float | None]]
             ) -> dict[str, Any]:
    """``samples``: mismatch samples (``id``, ``at``, ``path``, ``shadow.ms``); ``writes``: the route's journal
    entries around them. Returns the count of samples, of drift among them, and a few drift sample ids."""
    by_path: dict[str, list[tuple[float, float | None]]] = {}
    for target, created, done in writes:
        by_path.setdefault(target.split("?", 1)[0], []).append((created, done))
    total, drift = 0, []
    for sample in samples:
        total += 1
        at = float(sample["at"])
        read = float((sample.get("shadow") or {}).get("ms") or 0.0) / 1000.0
        for created, done in by_path.get(str(sample["path"]).split("?", 1)[0], ()):
            # Journaled before the comparison was recorded, and not on the other side before the shadow read.
            if created <= at + SLACK and (done is None or done >= at - read - SLACK):
                drift.append(sample["id"])
                break
    return {"mismatches": total, "drift": len(drift), "real": total - len(drift), "drift_samples": drift[:10]}
