"""Commands about the route table of a running gateway and moving routes: ``routes``, ``rollback``, ``resume``
and ``history``.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.client import admin_client
from gateway.cli.output import ago, console, fmt_ms, print_json


def cmd_routes(args: argparse.Namespace) -> int:
    client = admin_client(args)
    routes = client.call("GET", "/api/routes")
    status = client.call("GET", "/api/config")
    if args.json:
        print_json({"config": status, "routes": routes})
        return 0
    from rich.table import Table as RTable

    con = console()
    last = status["last_reload"]
    head = f"generation {status['generation']} from {status['path']}"
    con.print(head)
    if not last["ok"]:
        con.print(f"[bold red]LAST RELOAD FAILED[/bold red] {ago(last['at'])}; still serving generation "
                  f"{status['generation']}:\n[red]{last['error']}[/red]")
    t = RTable(show_edge=False)
    for col in ("route", "match", "stage", "effective", "to", "weight", "shadow match", "legacy p50/p99 ms",
                "new p50/p99 ms", "rolled back"):
        t.add_column(col)
    for r in routes:
        st = r["stats"]
        rb = r["rolled_back"]
        # In shadow stage the new side is the shadow copies; the weight only means something in a canary.
        new = st["shadow"] if r["effective_stage"] == "shadow" else st["extracted"]
        weight = f"{r['weight']:g}%" if r["weight"] is not None else "-"   # computed by the gateway
        t.add_row(
            r["name"], r["match"], r["stage"],
            r["effective_stage"] if r["effective_stage"] == r["stage"] else f"[red]{r['effective_stage']}[/red]",
            r["to"] or "-", weight,
            "-" if r["shadow_match_rate"] is None else f"{r['shadow_match_rate']:.1f}%",
            f"{fmt_ms(st['legacy']['p50_ms'])}/{fmt_ms(st['legacy']['p99_ms'])}",
            f"{fmt_ms(new['p50_ms'])}/{fmt_ms(new['p99_ms'])}",
            f"[red]{rb['actor']}: {rb['reason']}[/red]" if rb else "",
        )
    con.print(t)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    client = admin_client(args)
    view = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/rollback",
                       {"reason": args.reason or "manual rollback", "actor": "cli"})
    if args.json:
        print_json(view)
    else:
        rb = view.get("rolled_back") or {}
        if view.get("already_rolled_back"):
            print(f"route {view['name']} was already rolled back by {rb.get('actor')} {ago(rb.get('at'))}: "
                  f"{rb.get('reason')}")
        else:
            print(f"route {view['name']} now served by {view['legacy']} (rolled back); "
                  f"`strangler resume {view['name']}` undoes it")
        _pending_writes(client, view["name"])
    return 0


def _pending_writes(client: Any, route: str) -> None:
    """A rollback never discards mirrored writes: say how many are still on their way, and where."""
    rows = client.call("GET", "/api/sync", query={"route": route})["routes"]
    if not rows:
        return
    row = rows[0]
    print(f"{row['pending']} mirrored write(s) still pending for route {route}; the journal keeps delivering "
          f"them (`strangler sync {route}`)" + (f"; {row['dead']} dead letter(s)" if row["dead"] else ""))


def cmd_resume(args: argparse.Namespace) -> int:
    client = admin_client(args)
    view = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/resume",
                       {"actor": "cli", "reason": args.reason or ""})
    if args.json:
        print_json(view)
    elif view.get("was_rolled_back"):
        print(f"route {view['name']} resumed stage {view['stage']}")
    else:
        print(f"route {view['name']} was not rolled back; stage {view['stage']}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    client = admin_client(args)
    rows = client.call("GET", "/api/history", query={"route": args.route, "limit": args.limit})
    if args.json:
        print_json(rows)
        return 0
    import datetime as dt

    from rich.table import Table as RTable

    t = RTable(show_edge=False)
    for col in ("when", "kind", "route", "actor", "reason / change"):
        t.add_column(col)
    for h in reversed(rows):
        when = dt.datetime.fromtimestamp(h["at"]).strftime("%Y-%m-%d %H:%M:%S")
        detail = h["reason"]
        if h["kind"] == "config" and h["detail"].get("fields"):
            detail += " " + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in h["detail"]["fields"].items())
        elif h["kind"] == "reload" and h["detail"].get("changes"):
            detail += f" ({len(h['detail']['changes'])} route change(s))"
        style = "red" if h["kind"] in ("rollback", "reload_failed") else None
        t.add_row(when, h["kind"], h["route"] or "-", h["actor"], detail, style=style)
    console().print(t)
    return 0
