"""Backend protection: a concurrency limit with a bounded queue, and a circuit breaker, per backend.

- **Limit** (``max_concurrency``, ``queue``): at most N requests in flight to the backend; up to ``queue`` more
  wait (no longer than the backend's connect timeout) for a slot; beyond that the gateway answers 503 at once, so
  an overloaded backend sheds load instead of piling up connections.
- **Circuit** (``circuit: {failures, cooldown}``): after N consecutive failures (refused, timed out, broken, or a
  5xx answer) the circuit opens: requests are not sent for ``cooldown``; routes with ``on_error: fallback`` go
  straight to legacy, others get 503. After the cooldown one probe request is let through (half-open): success
  closes the circuit, failure opens it again.

State is per backend name and survives reloads while the backend's settings are unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable

from gateway.config.model import Backend, CircuitSpec
from gateway.errors import ConcurrencyLimited

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Circuit:
    __slots__ = ("spec", "state", "failures", "opened_at", "probing", "probe_at", "_clock")

    def __init__(self, spec: CircuitSpec, clock=time.monotonic) -> None:  # noqa: ANN001
        self.spec = spec
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self.probe_at = 0.0
        self._clock = clock

    def allow(self) -> bool:
        """Whether a request may go to the backend now (a True in half-open state is the probe). A probe that
        never reports back (its request refused for its own reasons, or dropped) is replaced after a cooldown,
        so the circuit cannot stay half-open for ever."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now - self.opened_at < self.spec.cooldown:
                return False
            self.state = HALF_OPEN
            self.probing = False
        if self.probing and now - self.probe_at < self.spec.cooldown:
            return False
        self.probing = True
        self.probe_at = now
        return True

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.spec.failures:
            self.state = OPEN
            self.opened_at = self._clock()
            self.probing = False


class Limit:
    __slots__ = ("backend", "max_concurrency", "queue", "in_flight", "_waiters")

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.max_concurrency = backend.max_concurrency or 0
        self.queue = backend.queue
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.in_flight < self.max_concurrency:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.queue:
            raise ConcurrencyLimited(f"{self.backend.name}: {self.in_flight} requests in flight (max_concurrency "
                                     f"{self.max_concurrency}, queue {self.queue} full)", backend=self.backend.name)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.backend.timeouts.connect)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot arrived just as the wait ended: keep it
            waiter.cancel()
            raise ConcurrencyLimited(f"{self.backend.name}: no free slot within "
                                     f"{self.backend.timeouts.connect:g}s", backend=self.backend.name) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)   # hand the slot over: in_flight stays the same
                return
        self.in_flight -= 1


class Protection:
    """Limits and circuits of all backends, rebuilt on reload only where a backend's settings changed."""

    def __init__(self) -> None:
        self.limits: dict[str, Limit] = {}
        self.circuits: dict[str, Circuit] = {}

    def update(self, backends: Iterable[Backend]) -> None:
        limits, circuits = {}, {}
        for b in backends:
            if b.max_concurrency:
                old = self.limits.get(b.name)
                keep = old is not None and (old.max_concurrency, old.queue) == (b.max_concurrency, b.queue)
                limits[b.name] = old if keep else Limit(b)  # type: ignore[assignment]
            if b.circuit is not None:
                oldc = self.circuits.get(b.name)
                circuits[b.name] = oldc if oldc is not None and oldc.spec == b.circuit else Circuit(b.circuit)
        self.limits, self.circuits = limits, circuits

    def circuit_states(self) -> dict[str, str]:
        return {name: c.state for name, c in self.circuits.items()}
