"""Progressive canary: ``canary.steps: [1, 5, 25, 50, 100]`` with ``interval``.

A route starts at its first step. Every ``interval`` the next step is taken, but only while the route's guard says
``healthy``: ``inconclusive`` holds the current step (too little evidence is never a reason to go on), ``failing``
rolls the route back (the guard does that). A route without a guard advances on time alone. The current step is
kept in the state store, so it survives restarts and all workers agree; editing the route starts over.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from gateway.rollout.guard import HEALTHY

if TYPE_CHECKING:
    from gateway.routing.table import Route
    from gateway.runtime.gateway import Gateway

log = logging.getLogger("strangler.rollout")


def current_weight(gw: Gateway, route: Route) -> float | None:
    """The weight a stepped canary is at now; None when the route has no steps (the configured weight holds)."""
    spec = route.spec
    if spec is None or spec.canary is None or not spec.canary.steps:
        return None
    saved = gw.state.steps.get(route.name)
    index = saved[1] if saved is not None and saved[0] == spec.fingerprint else 0
    steps = spec.canary.steps
    return steps[min(index, len(steps) - 1)]


def advance(gw: Gateway, now: float | None = None) -> None:
    """Take the next step on every stepped canary whose interval has passed and whose guard allows it."""
    now = time.time() if now is None else now
    for route in gw.table.routes:
        spec = route.spec
        if spec is None or route.stage != "canary" or spec.canary is None or not spec.canary.steps:
            continue
        if route.name in gw.state.pins:
            continue
        saved = gw.state.steps.get(route.name)
        if saved is None or saved[0] != spec.fingerprint:
            gw.state.set_step(route.name, spec.fingerprint, 0, "file", "canary started",
                              {"weight": spec.canary.steps[0], "step": 0})
            continue
        _fp, index, at = saved
        if index >= len(spec.canary.steps) - 1 or now - at < spec.canary.interval:
            continue
        if spec.guard is not None:
            judgement = gw.guards.state.get(route.name)
            if judgement is None or judgement.state != HEALTHY:
                continue  # held: the guard has not said healthy
            reason = f"guard healthy: {judgement.reason}"
        else:
            reason = f"interval {spec.canary.interval:g}s passed (no guard configured)"
        weight = spec.canary.steps[index + 1]
        gw.state.set_step(route.name, spec.fingerprint, index + 1, "guard" if spec.guard else "schedule", reason,
                          {"weight": weight, "step": index + 1, "from": spec.canary.steps[index]})
        log.info("route %s canary step %d: weight %g%%", route.name, index + 1, weight,
                 extra={"event": "canary_step", "route": route.name, "weight": weight, "reason": reason})
