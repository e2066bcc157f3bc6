"""The guard: automatic rollback of a route whose new side misbehaves.

Per route, over a sliding window, it judges the *new* side (the extracted backend in canary and extracted stages,
the shadow copies in shadow stage) against ``guard:`` thresholds: error rate (5xx answers, refused connections,
timeouts, resets, including attempts that a fallback then hid from the user), p99 latency relative to the legacy
side, and the shadow mismatch rate where comparisons exist. Three outcomes:

- ``inconclusive``: fewer than ``min_requests`` new-side requests in the window. Never treated as healthy: a
  progressive canary holds its step.
- ``failing``: a threshold is crossed. The route is pinned to legacy at once (the next request already goes to
  legacy), with the figures as the reason, in history and logs.
- ``healthy``: enough evidence, no threshold crossed.

Evaluation is cheap (counter sums over one-second slots); the p99 part merges histograms, so it runs at most
every ``P99_EVERY`` seconds per route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.config.model import GuardSpec
from gateway.telemetry.stats import RouteStats

HEALTHY, FAILING, INCONCLUSIVE = "healthy", "failing", "inconclusive"
P99_EVERY = 0.25


@dataclass(frozen=True, slots=True)
class Judgement:
    state: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def judge(spec: GuardSpec, stats: RouteStats, stage: str, with_p99: bool = True,
          peers: RouteStats | None = None) -> Judgement:
    """The guard's verdict on one route's new side, from its statistics windows (plus the other worker
    processes' windows of the same route, when there are several)."""
    new = stats.shadow if stage == "shadow" else stats.extracted
    peer_new = (peers.shadow if stage == "shadow" else peers.extracted,) if peers is not None else ()
    fresh = stats.fresh_span(spec.window)     # only what the new side did since a resume or an edit
    counts = new.counts(fresh, peer_new)
    figures: dict[str, Any] = {"window_s": spec.window, "requests": counts.requests, "errors": counts.errors}
    if counts.requests < spec.min_requests:
        return Judgement(INCONCLUSIVE, f"{counts.requests} new-side request(s) in the last {spec.window:g}s, "
                                       f"fewer than min_requests {spec.min_requests}", figures)
    error_rate = 100.0 * counts.errors / counts.requests
    figures["error_rate"] = round(error_rate, 2)
    if error_rate > spec.max_error_rate:
        return Judgement(FAILING, f"error rate {error_rate:.1f}% > {spec.max_error_rate:g}% "
                                  f"({counts.errors}/{counts.requests} in {spec.window:g}s)", figures)
    compared = stats.shadow.counts(fresh, (peers.shadow,) if peers is not None else ())
    if spec.max_mismatch_rate is not None and compared.compared >= spec.min_requests:
        mismatch_rate = 100.0 * compared.mismatches / compared.compared
        figures["mismatch_rate"] = round(mismatch_rate, 2)
        if mismatch_rate > spec.max_mismatch_rate:
            return Judgement(FAILING, f"shadow mismatch rate {mismatch_rate:.1f}% > {spec.max_mismatch_rate:g}% "
                                      f"({compared.mismatches}/{compared.compared})", figures)
    if spec.max_p99_ratio is not None and with_p99 and stage != "shadow":
        legacy = stats.legacy.summary(spec.window, (peers.legacy,) if peers is not None else ())
        mine = new.summary(fresh, peer_new)
        if legacy.requests >= spec.min_requests and legacy.p99 and mine.p99:
            ratio = mine.p99 / legacy.p99
            figures.update(p99_ratio=round(ratio, 2), p99_ms=round(mine.p99 * 1000, 2),
                           legacy_p99_ms=round(legacy.p99 * 1000, 2))
            if ratio > spec.max_p99_ratio:
                return Judgement(FAILING, f"p99 {mine.p99 * 1000:.1f}ms is {ratio:.2f}x legacy's "
                                          f"{legacy.p99 * 1000:.1f}ms (max {spec.max_p99_ratio:g}x)", figures)
    return Judgement(HEALTHY, f"{counts.requests} new-side request(s), error rate {error_rate:.1f}%", figures)


class Guards:
    """The guard state of every route of a running gateway (kept across reloads, by route name)."""

    def __init__(self) -> None:
        self.state: dict[str, Judgement] = {}
        self._p99_at: dict[str, float] = {}

    def evaluate(self, name: str, spec: GuardSpec, stats: RouteStats, stage: str,
                 peers: RouteStats | None = None) -> Judgement:
        now = time.monotonic()
        with_p99 = now - self._p99_at.get(name, 0.0) >= P99_EVERY
        if with_p99:
            self._p99_at[name] = now
        verdict = judge(spec, stats, stage, with_p99, peers)
        previous = self.state.get(name)
        if verdict.state == HEALTHY and not with_p99 and previous is not None and previous.state == FAILING:
            verdict = previous  # a p99 failure stands until the next p99 evaluation says otherwise
        self.state[name] = verdict
        return verdict

    def forget(self, name: str) -> None:
        self.state.pop(name, None)
        self._p99_at.pop(name, None)
