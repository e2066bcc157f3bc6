"""A waiting room's figures over the last minute: admissions per second and the wait of queued visitors."""

from __future__ import annotations

from collections import deque

WINDOW = 60.0
RATE_WINDOW = 10.0


class RoomStats:
    __slots__ = ("admitted", "waits", "direct", "queued", "full", "store_down")

    def __init__(self) -> None:
        self.admitted: deque[float] = deque(maxlen=1 << 16)               # when each admission happened
        self.waits: deque[tuple[float, float]] = deque(maxlen=1 << 16)    # (when, seconds waited) of queued ones
        self.direct = 0        # let in without queueing
        self.queued = 0        # let in after waiting in line
        self.full = 0          # turned away: the line was full
        self.store_down = 0    # let through (or turned away) while the line's store was down

    def let_in(self, now: float, waited: float | None) -> None:
        self.admitted.append(now)
        if waited is None:
            self.direct += 1
        else:
            self.queued += 1
            self.waits.append((now, waited))

    def summary(self, now: float) -> dict[str, float | int | None]:
        recent = [t for t in self.admitted if t > now - RATE_WINDOW]
        waits = sorted(w for t, w in self.waits if t > now - WINDOW)
        return {"admitted_per_s": round(len(recent) / RATE_WINDOW, 2),
                "wait_p50_s": _quantile(waits, 0.5), "wait_p99_s": _quantile(waits, 0.99),
                "admitted_direct": self.direct, "admitted_from_queue": self.queued, "turned_away_full": self.full}


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
