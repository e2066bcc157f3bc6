"""``strangler explain``: which route and backend a request would reach, and why, in words.

Shared by the CLI (offline, from the file) and the admin API (live: rollback pins and the canary's current step).
The side comes from ``gateway.rollout.decision.decide``, the function the request path uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from gateway.rollout.controller import Rollout, serves_text
from gateway.rollout.decision import decide, effective_stage, sticky_value
from gateway.routing.paths import PathError, normalize_path, split_target
from gateway.routing.table import Route, Table, describe_match


def explain(table: Table, method: str, target: str, headers: Mapping[str, str],
            rollout: Rollout | None = None) -> dict[str, Any]:
    """Which route and side a request reaches. With ``rollout`` (the running gateway) the answer includes
    rollback pins and the live weight of a stepped canary; without it, the file alone."""
    method = method.upper()
    out: dict[str, Any] = {"method": method, "target": target, "generation": table.generation}
    try:
        path, _query = split_target(target)
        norm = normalize_path(path, table.config.limits.path_parameters)
    except PathError as exc:
        out.update(outcome="refused", status=400, why=f"the path is refused before matching: {exc}")
        return out
    out["normalized_path"] = norm
    lowered = _Caseless(headers)
    considered = table.explain(method, norm, lowered)
    rows = []
    chosen = None
    for c in considered:
        rows.append({"route": c.entry.name, "match": describe_match(c.entry.match), "result": c.reason,
                     "detail": c.detail, "priority": c.entry.priority, "order": c.entry.order,
                     "params": dict(c.params)})
        if c.reason == "chosen":
            chosen = c
    out["considered"] = rows
    route = table.by_name[chosen.entry.name] if chosen else table.fallback
    out["route"] = route.name
    out.update(_side(route, lowered, rollout, dict(chosen.params) if chosen else {}))
    if chosen is None:
        out["why"] = f"no route matches, so the fallback backend {route.legacy.name!r} answers"
    else:
        why = f"route {route.name!r} ({describe_match(chosen.entry.match)}) is the first match in precedence order"
        outranked = [r["route"] for r in rows if r["result"] == "outranked"]
        if outranked:
            why += f"; it outranks {', '.join(repr(n) for n in outranked)}"
        out["why"] = why
    return out


def _side(route: Route, headers: Mapping[str, str], rollout: Rollout | None,
          params: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The stage, weight and side for this request, through the same ``decide`` as the request path."""
    if rollout is not None:
        view = rollout.view(route)
        pinned, weight = view["rolled_back"] is not None, view["weight"]
    else:
        pinned, weight = False, _file_weight(route)
        view = {"stage": route.stage, "effective_stage": effective_stage(route, False), "weight": weight,
                "rolled_back": None, "serves": serves_text(route, effective_stage(route, False), weight)}
    out = {"stage": view["stage"], "effective_stage": view["effective_stage"], "weight": weight,
           "rolled_back": view["rolled_back"], "backend": view["serves"]}
    canary = route.spec.canary if route.spec is not None else None
    if view["effective_stage"] != "canary" or canary is None:
        out["side"] = decide(route, pinned, weight, None).side
        return out
    sticky = canary.sticky
    value = sticky_value(headers, _cookies(headers), sticky, params) if sticky is not None else None
    if value is None:
        out["side"] = None
        how = ("no sticky key is configured" if sticky is None
               else f"the request has no {sticky.kind} {sticky.name}")
        gets = (f"; the response sets cookie {sticky.name} so the next request sticks"
                if sticky is not None and sticky.kind == "cookie" else "")
        out["backend"] += (f"; this request: a random draw ({how}): {weight or 0:g}% go to {route.to.name}, "  # type: ignore[union-attr]
                           f"the rest to {route.legacy.name}{gets}")
        return out
    decision = decide(route, pinned, weight, value)
    out["side"] = decision.side
    out["backend"] += f"; this request: {decision.backend.name} (sticky by {sticky.kind} {sticky.name}={value})"  # type: ignore[union-attr]
    return out


def _file_weight(route: Route) -> float | None:
    """Without a running gateway: the configured weight, or a stepped canary's first step."""
    canary = route.spec.canary if route.spec is not None and route.stage == "canary" else None
    if canary is None:
        return None
    return canary.steps[0] if canary.steps else canary.weight


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(headers.get("cookie") or "")
    return {name: morsel.value for name, morsel in jar.items()}


class _Caseless(dict):  # type: ignore[type-arg]
    """Headers given on the command line, looked up case-insensitively like a real request's."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key).lower())
