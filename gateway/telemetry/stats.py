"""Per-route, per-side sliding-window statistics: requests, errors, shadow verdicts and latency percentiles.

A window is a ring of one-second slots; each slot keeps counters and a log-scale latency histogram (about 5%
resolution from 0.1 ms to 100 s), so recording costs a few integer operations and a percentile over any span of the
window merges at most ``seconds`` small arrays. The guard and the admin API read the same windows.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

_MIN = 1e-4           # 0.1 ms
_GROWTH = 1.1
_BINS = int(math.log(1e6) / math.log(_GROWTH)) + 2   # up to 100 s


# Bin i > 0 holds (_MIN * _GROWTH**(i-1), _MIN * _GROWTH**i]; a bisect over the edges finds it in C.
_EDGES = [_MIN * _GROWTH**i for i in range(_BINS - 1)]


def _bin_value(index: int) -> float:
    """Upper edge of a bin: percentiles are reported conservatively (never lower than the truth by > 10%)."""
    return _MIN * _GROWTH**index


class _Slot:
    __slots__ = ("second", "requests", "errors", "compared", "mismatches", "hist")

    def __init__(self) -> None:
        self.second = -1
        self.requests = 0
        self.errors = 0
        self.compared = 0
        self.mismatches = 0
        self.hist: list[int] = [0] * _BINS

    def reset(self, second: int) -> None:
        self.second = second
        self.requests = self.errors = self.compared = self.mismatches = 0
        self.hist = [0] * _BINS


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int
    errors: int
    compared: int
    mismatches: int
    p50: float | None
    p99: float | None

    @property
    def error_rate(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    @property
    def mismatch_rate(self) -> float:
        return 100.0 * self.mismatches / self.compared if self.compared else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 3),
                "compared": self.compared, "mismatches": self.mismatches,
                "mismatch_rate": round(self.mismatch_rate, 3),
                "p50_ms": None if self.p50 is None else round(self.p50 * 1000, 3),
                "p99_ms": None if self.p99 is None else round(self.p99 * 1000, 3)}


class Window:
    def __init__(self, seconds: int = 300, clock=time.monotonic) -> None:  # noqa: ANN001
        self.seconds = seconds
        self._slots = [_Slot() for _ in range(seconds)]
        self._clock = clock
        self.total_requests = 0
        self.total_errors = 0

    def _slot(self) -> _Slot:
        second = int(self._clock())
        slot = self._slots[second % self.seconds]
        if slot.second != second:
            slot.reset(second)
        return slot

    def request(self, latency: float, error: bool) -> None:
        self.request_batch([latency], int(error))

    def request_batch(self, latencies: list[float], errors: int) -> None:
        """``request`` for requests finished in the same loop turn (the recorder's fold): one slot lookup."""
        slot = self._slot()
        hist = slot.hist
        for latency in latencies:
            hist[bisect_left(_EDGES, latency)] += 1
        slot.requests += len(latencies)
        self.total_requests += len(latencies)
        if errors:
            slot.errors += errors
            self.total_errors += errors

    def verdict(self, mismatch: bool) -> None:
        slot = self._slot()
        slot.compared += 1
        if mismatch:
            slot.mismatches += 1

    def counts(self, span: float = 60.0, also: Iterable[Window] = ()) -> Summary:
        """Counters only (no percentiles): cheap enough to evaluate after every request. ``also``: other
        processes' windows of the same route and side (see gateway.fleet), added in."""
        now = int(self._clock())
        requests = errors = compared = mismatches = 0
        for window in (self, *also):
            slots, size = window._slots, window.seconds
            for second in range(now - min(int(span), size) + 1, now + 1):
                slot = slots[second % size]
                if slot.second == second:
                    requests += slot.requests
                    errors += slot.errors
                    compared += slot.compared
                    mismatches += slot.mismatches
        return Summary(requests, errors, compared, mismatches, None, None)

    def reset(self) -> None:
        for slot in self._slots:
            slot.reset(-1)

    def forget_before(self, second: int) -> None:
        """Drop the seconds before ``second`` (another process's seconds from before a resume)."""
        for slot in self._slots:
            if 0 <= slot.second < second:
                slot.reset(-1)

    def now(self) -> float:
        return float(self._clock())

    def summary(self, span: float = 60.0, also: Iterable[Window] = ()) -> Summary:
        now = int(self._clock())
        oldest = now - min(int(span), self.seconds) + 1
        requests = errors = compared = mismatches = 0
        hist = [0] * _BINS
        for window in (self, *also):
            for slot in window._slots:
                if oldest <= slot.second <= now:
                    requests += slot.requests
                    errors += slot.errors
                    compared += slot.compared
                    mismatches += slot.mismatches
                    if slot.requests:
                        hist = [a + b for a, b in zip(hist, slot.hist, strict=True)]
        return Summary(requests, errors, compared, mismatches, _percentile(hist, 0.5), _percentile(hist, 0.99))

    def completed(self, after: int, current: bool = False) -> list[tuple[int, int, int, int, int, dict[int, int]]]:
        """Finished seconds newer than ``after``: (second, requests, errors, compared, mismatches, histogram as
        {bin: count}), for publishing to other worker processes; ``current``: the unfinished second too (the
        last publication of a process that stops)."""
        end = int(self._clock()) + (1 if current else 0)
        out = []
        for slot in self._slots:
            if after < slot.second < end and (slot.requests or slot.compared):
                hist = {i: n for i, n in enumerate(slot.hist) if n}
                out.append((slot.second, slot.requests, slot.errors, slot.compared, slot.mismatches, hist))
        return out

    def absorb(self, second: int, requests: int, errors: int, compared: int, mismatches: int,
               hist: dict[int, int]) -> None:
        """Add another process's finished second to this window."""
        slot = self._slots[second % self.seconds]
        if slot.second != second:
            slot.reset(second)
        slot.requests += requests
        slot.errors += errors
        slot.compared += compared
        slot.mismatches += mismatches
        for i, n in hist.items():
            slot.hist[int(i)] += n

    def series(self, span: int = 60) -> list[int]:
        """Requests per second over the last ``span`` seconds, oldest first (for sparklines)."""
        now = int(self._clock())
        by_second = {s.second: s.requests for s in self._slots}
        return [by_second.get(sec, 0) for sec in range(now - span + 1, now + 1)]


def _percentile(hist: list[int], q: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return _bin_value(i)
    return _bin_value(len(hist) - 1)


class RouteStats:
    """The windows of one route: one per side, kept across reloads (keyed by route name)."""

    __slots__ = ("legacy", "extracted", "shadow", "skipped", "fresh_from")

    def __init__(self) -> None:
        self.legacy = Window()
        self.extracted = Window()
        self.shadow = Window()          # the shadow copies' own latency and errors
        self.skipped: dict[str, int] = {}
        self.fresh_from: int | None = None   # the first second the guard's evidence may come from

    def reset_new_side(self) -> None:
        """Start the guard's evidence afresh: after a resume or an edit of the route, the guard judges the new side
        on what it does from the next second on, not on the failures that caused the rollback. The windows
        themselves are kept, so the routes table and the console go on showing the last minute as it was."""
        self.fresh_from = int(self.extracted.now()) + 1

    def fresh_span(self, span: float) -> float:
        """``span`` cut to the seconds since ``reset_new_side``: the window the guard may judge."""
        if self.fresh_from is None:
            return span
        return float(max(0, min(int(span), int(self.extracted.now()) - self.fresh_from + 1)))

    def side(self, name: str) -> Window:
        return self.extracted if name == "extracted" else self.legacy

    def as_dict(self, span: float = 60.0) -> dict[str, object]:
        return {"legacy": self.legacy.summary(span).as_dict(), "extracted": self.extracted.summary(span).as_dict(),
                "shadow": self.shadow.summary(span).as_dict(), "skipped": dict(self.skipped),
                "total": {"legacy": self.legacy.total_requests, "extracted": self.extracted.total_requests}}


class StatsRegistry:
    def __init__(self) -> None:
        self._routes: dict[str, RouteStats] = {}

    def names(self) -> list[str]:
        return list(self._routes)

    def route(self, name: str) -> RouteStats:
        stats = self._routes.get(name)
        if stats is None:
            stats = self._routes[name] = RouteStats()
        return stats
