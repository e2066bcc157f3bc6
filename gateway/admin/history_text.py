"""One line per history event, in the user's words, computed here once: the CLI (`strangler history`) and the
console's "Recent events" show the same text, the change itself and not only its kind."""

from __future__ import annotations

from typing import Any


def describe(event: dict[str, Any]) -> str:
    kind, reason, detail = event["kind"], event.get("reason") or "", event.get("detail") or {}
    if kind == "config":
        return _config_change(reason, detail)
    if kind == "reload":
        changes = detail.get("changes") or []
        if not changes:
            return f"{reason}: no route changed"
        return f"{reason}: " + "; ".join(f"{c['route']} {_config_change(c['change'], c)}" for c in changes)
    if kind == "canary_step" and "weight" in detail:
        was = f" from {detail['from']:g}%" if detail.get("from") is not None else ""
        return f"weight {detail['weight']:g}%{was}: {reason}"
    return reason


def _config_change(change: str, detail: dict[str, Any]) -> str:
    if change == "added":
        return f"added (stage {detail.get('stage')}" + (f", to {detail['to']}" if detail.get("to") else "") + ")"
    if change != "modified":
        return change
    parts = [f"{key} {_v(a)} -> {_v(b)}" for key, (a, b) in (detail.get("fields") or {}).items()]
    blocks = detail.get("blocks") or []
    if blocks:
        parts.append(", ".join(blocks) + " changed")
    return "modified: " + ("; ".join(parts) if parts else "the route's settings changed")


def _v(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
