"""``strangler fleet``: the gateways sharing this store, their config digest, and any drift or silence; and the
store's health line that ``strangler routes`` shows during an outage. The flags come from ``GET /api/fleet``."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.client import admin_client
from gateway.cli.output import ago, show


def store_line(store: dict[str, Any]) -> str | None:
    """One line when the store is unreachable (None when it is fine)."""
    if store.get("up", True):
        return None
    return (f"[bold red]STORE UNREACHABLE[/bold red] since {ago(store.get('since'))} ({store.get('error')}): "
            f"serving on the last known state; {store.get('buffered', 0)} write(s) buffered, "
            f"{store.get('dropped', 0)} dropped")


def cmd_fleet(args: argparse.Namespace) -> int:
    return show(args, admin_client(args).call("GET", "/api/fleet"), _render)


def _render(con: Any, view: dict[str, Any]) -> None:
    from rich.table import Table as RTable

    store = view["store"]
    con.print(f"store: {store.get('kind')} {store.get('url', '')}")
    line = store_line(store)
    if line:
        con.print(line)
    t = RTable(show_edge=False)
    for col in ("instance", "address", "admin", "version", "generation", "digest", "started", "last seen", ""):
        t.add_column(col)
    for m in view["instances"]:
        flags = []
        if m.get("drift"):
            flags.append("[bold red]DRIFT[/bold red]")
        if m.get("stale"):
            flags.append("[yellow]STALE[/yellow]")
        if m.get("self"):
            flags.append("(this one)")
        t.add_row(m.get("id", ""), m.get("address", ""), m.get("admin", ""), m.get("version", ""),
                  str(m.get("generation", "")), (m.get("digest") or "")[:12], ago(m.get("started")),
                  f"{m.get('age_s', 0):.1f}s ago", " ".join(flags))
    con.print(t)
    if view.get("drift"):
        ref = (view.get("reference_digest") or "")[:12] or "none (no majority)"
        con.print(f"[bold red]drift:[/bold red] instances serve different routes.yaml contents "
                  f"(most serve {ref}); the flagged ones differ")
    if view.get("stale"):
        con.print(f"[yellow]{view['stale']} instance(s) stopped reporting[/yellow]")
