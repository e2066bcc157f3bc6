"""``Rollout``: the one place that knows which side serves a route now, and the one that changes it.

It owns rollback and resume (pins in the ``PinStore``), progressive canary steps, and the guard's judgements.
Every surface asks it: the request handler (``decide``), the shadow (through the decision), the admin API
(``view``: the computed side and live weight, so the console and the CLI never recompute them) and ``explain``
(``weight`` and ``pinned``).

The guard is not judged inside the request that fed it: ``observed`` marks the route, and the judgement runs once
per event-loop iteration for every marked route, after the responses of that iteration are on their way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from gateway.config.model import Config
from gateway.rollout import guard as guard_mod
from gateway.rollout.decision import Decision, decide_request, effective_stage
from gateway.rollout.guard import HEALTHY, Guards
from gateway.routing.table import Route
from gateway.stores.api import PinStore
from gateway.telemetry.stats import RouteStats, StatsRegistry

log = logging.getLogger("strangler.rollout")

Peers = Callable[[str], RouteStats | None]


class Rollout:
    def __init__(self, state: PinStore, stats: StatsRegistry, *, peers: Peers | None = None,
                 forget_peers: Callable[[str], None] | None = None, primary: bool = True) -> None:
        self.state = state
        self.stats = stats
        self.guards = Guards()
        self._peers = peers
        self._forget_peers = forget_peers
        # Guarded routes seen pinned: when one is no longer pinned (resumed here or by another process), its guard
        # starts on fresh evidence before it judges again.
        self._seen_pinned: set[str] = set()
        # With several workers, one of them (the primary) takes canary steps and writes shared history entries.
        self.primary = primary
        self._marked: dict[str, Route] = {}
        self._judging = False
        # The guard state last written to history per route. It outlives ``guards.forget`` (a resume or an edit
        # starts the judgement afresh), so history records changes of state, not every new judgement.
        self._recorded: dict[str, str] = {}

    # -- the decision ---------------------------------------------------------------------------------------------

    def pinned(self, route: Route) -> bool:
        return not route.is_fallback and route.name in self.state.pins

    def weight(self, route: Route) -> float | None:
        """The canary weight a route is at now: its current step for a stepped canary, else the configured one;
        None for a route that is not a canary."""
        spec = route.spec
        if route.stage != "canary" or spec is None or spec.canary is None:
            return None
        steps = spec.canary.steps
        if not steps:
            return spec.canary.weight
        saved = self.state.steps.get(route.name)
        index = saved.index if saved is not None and saved.fingerprint == spec.fingerprint else 0
        return steps[min(index, len(steps) - 1)]

    def decide(self, route: Route, request: web.BaseRequest, params: Mapping[str, str] | None = None) -> Decision:
        """``params``: what the route's path pattern captured (for a canary sticky by a path parameter)."""
        pinned = route.spec is not None and route.name in self.state.pins
        fixed = route.decisions.get(pinned)
        if fixed is not None:
            return fixed
        if route.stage == "canary" and not pinned and route.to is not None:
            return decide_request(route, request, pinned, self.weight(route), params)
        # Every other stage decides from the config and the pin alone: once per route and config generation.
        decision = route.decisions[pinned] = decide_request(route, request, pinned, None, params)
        return decision

    def view(self, route: Route) -> dict[str, Any]:
        """What every surface shows about a route's rollout, computed here once."""
        pin = self.state.pins.get(route.name) if not route.is_fallback else None
        stage = effective_stage(route, pin is not None)
        weight = self.weight(route) if stage == "canary" else None
        share = {"legacy": 0.0, "shadow": 0.0, "extracted": 100.0}.get(stage, weight)
        return {"stage": route.stage, "effective_stage": stage, "weight": weight, "extracted_share": share,
                "step": self._step_view(route) if stage == "canary" else None,
                "serves": serves_text(route, stage, weight),
                "rolled_back": pin.as_dict() if pin is not None else None}

    def _step_view(self, route: Route) -> dict[str, Any] | None:
        spec = route.spec
        if spec is None or spec.canary is None or not spec.canary.steps:
            return None
        saved = self.state.steps.get(route.name)
        index = saved.index if saved is not None and saved.fingerprint == spec.fingerprint else 0
        return {"index": index, "of": len(spec.canary.steps), "steps": list(spec.canary.steps),
                "since": saved.at if saved is not None else None, "interval_s": spec.canary.interval}

    # -- rollback and resume --------------------------------------------------------------------------------------

    def rollback(self, route: Route, actor: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Pin a route to legacy now; persisted, so it survives restarts and reaches every worker."""
        fingerprint = route.spec.fingerprint if route.spec else ""
        self._seen_pinned.add(route.name)
        self.state.pin(route.name, fingerprint, actor, reason, {"stage": route.stage, **(detail or {})})
        log.warning("route %s rolled back to legacy by %s: %s", route.name, actor, reason,
                    extra={"event": "rollback", "route": route.name, "actor": actor, "reason": reason})

    def resume(self, route: Route, actor: str, reason: str = "") -> bool:
        resumed = self.state.unpin(route.name, actor, reason or "resumed")
        self._fresh_evidence(route.name)
        if resumed:
            log.info("route %s resumed stage %s by %s", route.name, route.stage, actor,
                     extra={"event": "resume", "route": route.name, "actor": actor})
        return resumed

    def _fresh_evidence(self, name: str) -> None:
        """The guard judges a new intent (a resume, an edited route) on new-side requests made after it."""
        self.stats.route(name).reset_new_side()
        self.guards.forget(name)
        if self._forget_peers is not None:
            self._forget_peers(name)

    # -- the guard ------------------------------------------------------------------------------------------------

    def observed(self, route: Route) -> None:
        """A request or a comparison of ``route`` finished: judge its guard soon (once per loop iteration)."""
        if route.spec is None or route.spec.guard is None:
            return
        self._marked[route.name] = route
        if not self._judging:
            self._judging = True
            asyncio.get_running_loop().call_soon(self._judge_marked)

    def _judge_marked(self) -> None:
        self._judging = False
        marked, self._marked = self._marked, {}
        for route in marked.values():
            try:
                self.judge(route)
            except Exception:  # a bookkeeping error must never stop the next judgements
                log.exception("judging the guard of route %s failed", route.name)

    def judge(self, route: Route) -> guard_mod.Judgement | None:
        spec = route.spec
        if self.pinned(route):
            self._seen_pinned.add(route.name)
            return None
        if route.name in self._seen_pinned:
            # Resumed, maybe through another gateway: the failures that caused the rollback are not evidence.
            self._seen_pinned.discard(route.name)
            self._fresh_evidence(route.name)
        if spec is None or spec.guard is None or route.stage == "legacy":
            return None
        previous = self.guards.state.get(route.name)
        peers = self._peers(route.name) if self._peers is not None else None
        judgement = self.guards.evaluate(route.name, spec.guard, self.stats.route(route.name), route.stage, peers)
        if previous is None or previous.state != judgement.state:
            self._guard_changed(route, judgement)
        if judgement.state == guard_mod.FAILING:
            self.rollback(route, "guard", judgement.reason, {"figures": judgement.figures})
        return judgement

    def _guard_changed(self, route: Route, judgement: guard_mod.Judgement) -> None:
        if self._recorded.get(route.name) == judgement.state:
            return      # judged afresh (after a resume or a reload) but nothing changed: not worth a history row
        self._recorded[route.name] = judgement.state
        log.info("route %s guard: %s (%s)", route.name, judgement.state, judgement.reason,
                 extra={"event": "guard", "route": route.name, "state": judgement.state,
                        "figures": judgement.figures})
        if judgement.state != guard_mod.FAILING:  # a failure is recorded as the rollback it causes
            self.state.record("guard", route.name, "guard", f"{judgement.state}: {judgement.reason}",
                              {"state": judgement.state, "figures": judgement.figures})

    # -- progressive canary steps ---------------------------------------------------------------------------------

    def advance_steps(self, routes: Iterable[Route], now: float | None = None) -> None:
        """Take the next step on every stepped canary whose interval has passed and whose guard allows it.

        ``inconclusive`` holds the current step (too little evidence is never a reason to go on); ``failing``
        rolls the route back (the guard does that). A route without a guard advances on time alone."""
        if not self.primary:
            return
        now = time.time() if now is None else now
        for route in routes:
            spec = route.spec
            if spec is None or route.stage != "canary" or spec.canary is None or not spec.canary.steps:
                continue
            if self.pinned(route):
                continue
            steps = spec.canary.steps
            saved = self.state.steps.get(route.name)
            if saved is None or saved.fingerprint != spec.fingerprint:
                self.state.set_step(route.name, spec.fingerprint, 0, "file", "canary started",
                                    {"weight": steps[0], "step": 0})
                continue
            if saved.index >= len(steps) - 1 or now - saved.at < spec.canary.interval:
                continue
            if spec.guard is not None:
                judgement = self.guards.state.get(route.name)
                if judgement is None or judgement.state != HEALTHY:
                    continue  # held: the guard has not said healthy
                reason = f"guard healthy: {judgement.reason}"
            else:
                reason = f"interval {spec.canary.interval:g}s passed (no guard configured)"
            index = saved.index + 1
            self.state.set_step(route.name, spec.fingerprint, index, "guard" if spec.guard else "schedule", reason,
                                {"weight": steps[index], "step": index, "from": steps[saved.index]})
            log.info("route %s canary step %d: weight %g%%", route.name, index, steps[index],
                     extra={"event": "canary_step", "route": route.name, "weight": steps[index], "reason": reason})

    # -- reloads --------------------------------------------------------------------------------------------------

    def reloaded(self, new: Config, changes: list[dict[str, Any]], actor: str, generation: int) -> None:
        if self.primary:
            self.state.record("reload", None, actor, f"generation {generation}",
                              {"generation": generation, "changes": changes})
            for change in changes:
                self.state.record("config", change["route"], actor, change["change"], change)
        for change in changes:
            if change["change"] != "added":
                self._fresh_evidence(change["route"])
        self.clear_stale_pins(new, actor)

    def changed_at(self, name: str) -> float | None:
        """When routes.yaml last changed the route (added or modified it), from history; None if never seen."""
        for event in self.state.history(name, 1000):
            if event["kind"] == "config":
                return float(event["at"])
        return None

    def reload_failed(self, actor: str, error: str) -> None:
        if self.primary:
            self.state.record("reload_failed", None, actor, error)

    def clear_stale_pins(self, cfg: Config, actor: str) -> None:
        """A pin is the answer to one version of a route; a new spec in the file is a new intent and clears it."""
        self.state.refresh()
        for name, pin in list(self.state.pins.items()):
            spec = cfg.route(name)
            if spec is None or spec.fingerprint != pin.fingerprint:
                self.state.unpin(name, actor, "route changed in routes.yaml", kind="resume")


def serves_text(route: Route, stage: str, weight: float | None) -> str:
    """Who answers the route, in words: ``likes for 25% of users, else legacy, sticky by header X-User-Id``."""
    if stage == "legacy" or route.to is None:
        return route.legacy.name + (" (rolled back)" if route.stage != stage and route.to is not None else "")
    spec = route.spec
    if stage == "shadow":
        return f"{route.legacy.name} (shadowed to {route.to.name})"
    if stage == "extracted":
        suffix = f" (reverse shadow to {route.legacy.name})" if spec and spec.reverse_shadow else ""
        return route.to.name + suffix
    sticky = spec.canary.sticky if spec and spec.canary else None
    how = f", sticky by {sticky.kind} {sticky.name}" if sticky else ", a random draw per request (no sticky key)"
    return f"{route.to.name} for {weight or 0:g}% of users, else {route.legacy.name}{how}"
