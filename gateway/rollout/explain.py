"""``strangler explain``: which route and backend a request would reach, and why, in words.

Shared by the CLI (offline, from the file) and the admin API (live, with rollback pins and canary state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.routing.paths import PathError, normalize_path, split_target
from gateway.routing.table import Table, describe_match


def explain(table: Table, method: str, target: str, headers: Mapping[str, str],
            pins: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
    pin = (pins or {}).get(route.name)
    out["route"] = route.name
    out["stage"] = route.stage
    out["effective_stage"] = "legacy" if pin else route.stage
    out["rolled_back"] = pin.as_dict() if pin is not None and hasattr(pin, "as_dict") else None
    out["backend"] = _backend_text(route, pin is not None)
    side = _canary_side(route, lowered, pin is not None)
    if side is not None:
        out["backend"] += f"; this request: {side}"
    if chosen is None:
        out["why"] = f"no route matches, so the fallback backend {route.legacy.name!r} answers"
    else:
        why = f"route {route.name!r} ({describe_match(chosen.entry.match)}) is the first match in precedence order"
        outranked = [r["route"] for r in rows if r["result"] == "outranked"]
        if outranked:
            why += f"; it outranks {', '.join(repr(n) for n in outranked)}"
        out["why"] = why
    return out


def _canary_side(route: Any, headers: Mapping[str, str], pinned: bool) -> str | None:
    """For a sticky canary and a request that carries the sticky key: the side that user lands on."""
    from gateway.rollout.decision import in_share

    spec = route.spec
    if pinned or route.stage != "canary" or spec is None or spec.canary is None or spec.canary.sticky is None:
        return None
    sticky = spec.canary.sticky
    if sticky.kind == "header":
        value = headers.get(sticky.name)
    else:
        cookies = dict(part.strip().partition("=")[::2] for part in (headers.get("cookie") or "").split(";")
                       if "=" in part)
        value = cookies.get(sticky.name)
    if not value:
        return None
    side = route.to.name if in_share(route.name, spec.canary.weight, value) else route.legacy.name
    return f"{side} (sticky by {sticky.kind} {sticky.name}={value})"


def _backend_text(route: Any, pinned: bool) -> str:
    if pinned or route.to is None or route.stage == "legacy":
        return route.legacy.name + (" (rolled back)" if pinned else "")
    spec = route.spec
    if route.stage == "shadow":
        return f"{route.legacy.name} (shadowed to {route.to.name})"
    if route.stage == "extracted":
        suffix = f" (reverse shadow to {route.legacy.name})" if spec and spec.reverse_shadow else ""
        return route.to.name + suffix
    weight = spec.canary.weight if spec and spec.canary else 0
    sticky = spec.canary.sticky if spec and spec.canary else None
    how = f", sticky by {sticky.kind} {sticky.name}" if sticky else ""
    return f"{route.to.name} for {weight:g}% of users, else {route.legacy.name}{how}"


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
