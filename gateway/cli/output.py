"""What every command prints with: ``--json`` output, the rich console, and short forms of durations and ages."""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, _term_width()))


def _term_width() -> int:
    # shutil honours COLUMNS (set by the shell, and by scripts that want a fixed width), then the terminal.
    return shutil.get_terminal_size((140, 24)).columns


def show(args: argparse.Namespace, data: Any, render: Any) -> int:
    """``--json`` prints the API's answer as it is; otherwise ``render`` draws it for people."""
    if args.json:
        print_json(data)
    else:
        render(console(), data)
    return 0


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def ago(at: float | None) -> str:
    import time

    if not at:
        return "-"
    delta = time.time() - at
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"
