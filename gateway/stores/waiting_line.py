"""One route's waiting line, in memory: first come first served, let in at a fixed rate.

Numbers are handed out in arrival order. A token bucket fills at ``rate`` per second; each token *calls* the
number at the head of the line, which then has ``grace`` seconds to come back and be let in. While nobody waits,
at most ``capacity`` tokens are saved up, so a visitor arriving at a quiet moment passes at once (``enter``) and a
spike is let in at the rate plus that small burst.

    live   [.. admitted ..| h -> 17 18 20 21 ...]    waiting numbers, ascending (19 stopped polling: removed)
    called {15: deadline, 16: deadline}              at the head's turn, not yet back to be let in

A position is the number of waiting visitors up to and including this one: ``bisect(live, number) - h + 1``, so
it costs a binary search, and it can only go down (the head moves forward; numbers are only ever removed).
A visitor who neither polls nor comes back within ``grace`` loses the place (``sweep``, about once a second).
``seen`` is kept in the order of the last poll (a poll moves its number to the end), and ``called`` in the order
of the deadlines, so a sweep reads only the expired entries at their front, never the whole line.

The line is pure bookkeeping (the caller passes ``now``); persistence notes what changed in ``dirty``
(number -> "w" waiting, "c" called, None gone) for a store to write behind.
"""

from __future__ import annotations

from bisect import bisect_left

WAITING, CALLED = "w", "c"
LOST = -1
LET_IN = 0


class Line:
    __slots__ = ("rate", "capacity", "limit", "grace", "paused", "tokens", "last", "next_number", "live", "h",
                 "seen", "called", "dirty", "lost")

    def __init__(self, rate: float, capacity: float, limit: int, grace: float, now: float, *,
                 paused: bool = False, next_number: int = 1) -> None:
        self.rate = rate
        self.capacity = capacity
        self.limit = limit
        self.grace = grace
        self.paused = paused
        # A room that opens (or restarts) with a full bucket would let a burst of `capacity` in at once, which is
        # what the bucket is for; it starts with one token so the first visitor never waits for nothing.
        self.tokens = min(1.0, capacity)
        self.last = now
        self.next_number = next_number
        self.live: list[int] = []          # waiting numbers, ascending; live[h:] are still waiting
        self.h = 0
        self.seen: dict[int, float] = {}   # waiting number -> when it last polled
        self.called: dict[int, float] = {}  # called number -> deadline to come back
        self.dirty: dict[int, str | None] = {}
        self.lost = 0                      # visitors who lost their place by not polling

    # -- settings ---------------------------------------------------------------------------------------------------

    def configure(self, rate: float, capacity: float, limit: int, grace: float, paused: bool, now: float) -> None:
        """New settings from a reload: everyone keeps their number and their place."""
        self.advance(now)
        self.rate, self.capacity, self.limit, self.grace, self.paused = rate, capacity, limit, grace, paused

    def restore(self, numbers: list[tuple[int, str]], now: float) -> None:
        """Load a persisted line (after a restart): every visitor gets a fresh grace to come back, and the bucket
        starts empty so a restart lets nobody in ahead of the rate."""
        if numbers:
            self.tokens = 0.0
        for number, state in sorted(numbers):
            if state == CALLED:
                self.called[number] = now + self.grace
            else:
                self.live.append(number)
                self.seen[number] = now
            self.next_number = max(self.next_number, number + 1)

    # -- the request path -------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self.live) - self.h

    def enter(self, now: float) -> bool:
        """Let a visitor without a place in at once: only when nobody waits and a token is free."""
        self.advance(now)
        if self.h == len(self.live) and self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def join(self, now: float) -> tuple[int, int] | None:
        """A place at the back of the line: (number, position), or None when the line is full."""
        if len(self.live) - self.h >= self.limit:
            return None
        number = self.next_number
        self.next_number = number + 1
        self.live.append(number)
        self.seen[number] = now
        self.dirty[number] = WAITING
        return number, len(self.live) - self.h

    def poll(self, number: int, now: float) -> int:
        """``LET_IN`` (0) when this number was called, its position (> 0) while it waits, ``LOST`` (-1) when the
        line does not know it (stopped polling, or never issued here)."""
        self.advance(now)
        if number in self.called:
            del self.called[number]
            self.dirty[number] = None
            return LET_IN
        seen = self.seen
        if number in seen:
            del seen[number]          # to the end: ``seen`` stays ordered by the last poll
            seen[number] = now
            return bisect_left(self.live, number, self.h) - self.h + 1
        return LOST

    def eta(self, position: int) -> float:
        """Seconds until ``position`` is called at the current rate (inf while paused)."""
        if self.paused:
            return float("inf")
        return max(0.0, (position - self.tokens) / self.rate)

    # -- time -------------------------------------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Add the tokens earned since the last look and call that many numbers from the head of the line."""
        elapsed = now - self.last
        if elapsed <= 0:
            return
        self.last = now
        if self.paused:
            return
        self.tokens += elapsed * self.rate
        waiting = len(self.live) - self.h
        if waiting:
            n = min(int(self.tokens), waiting)
            if n:
                self._call(n, now)
                self.tokens -= n
        if len(self.live) == self.h:
            # Saved-up tokens are capped only while nobody waits: a queue is never slowed by the cap.
            self.tokens = min(self.tokens, self.capacity)

    def _call(self, n: int, now: float) -> None:
        live, seen, called, dirty = self.live, self.seen, self.called, self.dirty
        deadline = now + self.grace
        for number in live[self.h:self.h + n]:
            del seen[number]
            called[number] = deadline
            dirty[number] = CALLED
        self.h += n
        if self.h > 1024 and self.h * 2 > len(live):
            self.live = live[self.h:]
            self.h = 0

    def sweep(self, now: float) -> int:
        """Drop visitors silent for longer than ``grace`` (waiting) or called and never back; how many."""
        cutoff = now - self.grace
        gone = []
        for number, at in self.seen.items():        # oldest poll first: stop at the first recent one
            if at >= cutoff:
                break
            gone.append(number)
        if gone:
            self._remove(gone)
        expired = []
        for number, deadline in self.called.items():   # earliest deadline first
            if deadline >= now:
                break
            expired.append(number)
        for number in expired:
            del self.called[number]
            self.dirty[number] = None
        self.lost += len(gone) + len(expired)
        return len(gone) + len(expired)

    def _remove(self, gone: list[int]) -> None:
        for number in gone:
            del self.seen[number]
            self.dirty[number] = None
        if len(gone) < 64:
            live = self.live
            for number in gone:                      # a few: find each, cut it out (a memmove)
                del live[bisect_left(live, number, self.h)]
        else:
            drop = set(gone)
            self.live = [n for n in self.live[self.h:] if n not in drop]
            self.h = 0

    def take_dirty(self) -> dict[int, str | None]:
        dirty, self.dirty = self.dirty, {}
        return dirty
