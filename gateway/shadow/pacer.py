"""``Pacer``: how many shadow copies may be compared and recorded per event-loop iteration."""

from __future__ import annotations

import asyncio
import collections
import contextlib


class Pacer:
    """At most ``budget`` copies take their turn per event-loop iteration.

    Copies sent together come back together: a target that answers in a steady 500 ms returns all the copies in
    flight at once. Compared and recorded in one go, such a burst would hold the loop for milliseconds while
    primary requests wait behind it; spread over a few iterations, the primary side's I/O is handled in between.
    Waiting copies sleep on a future (no polling), and a reset at the start of each iteration's callbacks hands
    out the next turns."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._reset_pending = False

    async def turn(self) -> None:
        if self._used < self.budget and not self._waiters:
            self._used += 1
            self._schedule_reset()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._schedule_reset()
        try:
            await waiter   # resolved by _reset, which has counted this turn already
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def _schedule_reset(self) -> None:
        if not self._reset_pending:
            self._reset_pending = True
            asyncio.get_running_loop().call_soon(self._reset)

    def _reset(self) -> None:
        self._reset_pending = False
        self._used = 0
        while self._waiters and self._used < self.budget:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._used += 1
        if self._waiters or self._used:
            self._schedule_reset()
