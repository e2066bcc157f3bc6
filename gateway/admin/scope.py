"""The window of a shadow report or a list of comparisons, from the ``since=`` query parameter, in one place.

    since=10m        the last ten minutes (any duration: 30s, 2h)
    since=reload     per route, the route as routes.yaml has it now: what it did since its last change there
                     (a fix, a new ignore rule): counted by the route's fingerprint, so exact
    (absent)         everything stored (counters since the store was created or the route was cleared)

Every answer carries the window it covers, in words, so no figure is shown without its window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from gateway.admin.format import ago_text
from gateway.config.units import parse_duration
from gateway.stores import diff_slots

ChangedAt = Callable[[str], float | None]
Version = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str                    # "all" | "duration" | "reload"
    seconds: float | None = None

    def since(self, route: str, changed_at: ChangedAt, now: float) -> float | None:
        if self.kind == "duration" and self.seconds is not None:
            return now - self.seconds
        if self.kind == "reload":
            return changed_at(route)
        return None

    def moments(self, routes: Iterable[str], changed_at: ChangedAt, version: Version,
                now: float) -> dict[str, float | str]:
        """What the comparison store scopes each route's report by: a moment, or the route's version."""
        out: dict[str, float | str] = {}
        for name in routes:
            since = version(name) if self.kind == "reload" else self.since(name, changed_at, now)
            if since is not None:
                out[name] = since
        return out

    def label(self, since: float | None, now: float) -> str:
        """The window in words; ``since`` is the moment (for ``reload``: when the route last changed, if known)."""
        if self.kind == "reload":
            when = f", {ago_text(since, now)}" if since is not None else ""
            return f"since routes.yaml last changed this route{when}"
        if since is None:
            return "everything stored"
        return f"last {_span(now - since)}"


def parse_scope(request: web.Request) -> Scope:
    raw = (request.query.get("since") or "").strip()
    if not raw or raw == "all":
        return Scope("all")
    if raw == "reload":
        return Scope("reload")
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"since: expected a duration such as 10m or 1h, or 'reload', got {raw!r}") \
            from exc
    if seconds <= 0:
        raise web.HTTPBadRequest(text=f"since: expected a positive duration, got {raw!r}")
    if seconds > diff_slots.RETENTION:
        raise web.HTTPBadRequest(text=f"since: results are kept by time for {_span(diff_slots.RETENTION)}; "
                                      f"leave out since= for everything stored")
    return Scope("duration", seconds)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
