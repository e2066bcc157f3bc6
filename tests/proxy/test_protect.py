"""The circuit breaker as a pure state machine, on an injected clock."""

from __future__ import annotations

from gateway.config.model import CircuitSpec
from gateway.proxy.protect import CLOSED, HALF_OPEN, OPEN, Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    c = Circuit(CircuitSpec(failures=3, cooldown=10.0), clock=clock)
    for _ in range(2):
        assert c.allow()
        c.failure()
    c.success()                       # a success in between resets the count
    for _ in range(3):
        assert c.allow()
        c.failure()
    assert c.state == OPEN and not c.allow()
    clock.now += 10.0
    assert c.allow() and c.state == HALF_OPEN
    assert not c.allow()              # only one probe at a time
    c.success()
    assert c.state == CLOSED and c.allow()


def test_a_probe_that_never_reports_is_replaced_after_a_cooldown() -> None:
    clock = Clock()
    c = Circuit(CircuitSpec(failures=1, cooldown=5.0), clock=clock)
    c.failure()
    clock.now += 5.0
    assert c.allow()                  # the probe; its request is then dropped and never reports
    clock.now += 4.0
    assert not c.allow()
    clock.now += 1.0
    assert c.allow()                  # a new probe: the circuit is not stuck half-open
    c.failure()
    assert c.state == OPEN
