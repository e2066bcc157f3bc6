"""Small texts the admin API returns so that every surface shows the same words: ages and rates with their window
and denominator."""

from __future__ import annotations

from typing import Any


def ago_text(at: float, now: float) -> str:
    delta = max(0.0, now - at)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def equal_rate(equal: int, compared: int, window: str) -> dict[str, Any]:
    """The shadow match rate, as every surface shows it: answers equal for the migration (``match`` plus
    ``ignored``: they differed only in ignored or noise fields) over the comparisons in ``window``."""
    rate = round(100.0 * equal / compared, 2) if compared else None
    text = (f"{rate:.1f}% of {compared} compared, {window}" if rate is not None
            else f"nothing compared, {window}")
    return {"rate": rate, "equal": equal, "compared": compared, "window": window, "text": text}
