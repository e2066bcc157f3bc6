"""Commands about the route table of a running gateway and moving routes: ``routes``, ``rollback``, ``resume``
and ``history``.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.client import admin_client
from gateway.cli.fleet_commands import store_line
from gateway.cli.output import ago, console, fmt_ms, print_json


def cmd_routes(args: argparse.Namespace) -> int:
    client = admin_client(args)
    routes = client.call("GET", "/api/routes")
    status = client.call("GET", "/api/config")
    fleet = client.call("GET", "/api/fleet")
    if args.json:
        print_json({"config": status, "routes": routes, "store": fleet["store"]})
        return 0
    from rich.table import Table as RTable

    con = console()
    last = status["last_reload"]
    head = f"generation {status['generation']} from {status['path']}"
    con.print(head)
    outage = store_line(fleet["store"])
    if outage:
        con.print(outage)
    if not last["ok"]:
        con.print(f"[bold red]LAST RELOAD FAILED[/bold red] {ago(last['at'])}; still serving generation "
                  f"{status['generation']}:\n[red]{last['error']}[/red]")
    # Narrow terminals (100 columns) drop columns rather than cut names: stage and effective stage share one
    # column, and latency shows p99 only. Route names and templates fold, never end in an ellipsis.
    narrow = con.width < 150
    t = RTable(show_edge=False)
    longest = max((len(r["name"]) for r in routes), default=5)
    t.add_column("route", overflow="fold", min_width=min(longest, 24))
    t.add_column("match", overflow="fold", min_width=12)
    t.add_column("stage", overflow="fold")
    if not narrow:
        t.add_column("effective")
    for col in ("to", "weight", "shadow match (60s)"):
        t.add_column(col, overflow="fold")
    if narrow:
        t.add_column("p99 ms legacy/new")
    else:
        t.add_column("legacy p50/p99 ms")
        t.add_column("new p50/p99 ms")
    pinned = any(r["rolled_back"] for r in routes)
    if pinned:
        t.add_column("rolled back", overflow="fold")
    for r in routes:
        st = r["stats"]
        rb = r["rolled_back"]
        # In shadow stage the new side is the shadow copies; the weight only means something in a canary.
        new = st["shadow"] if r["effective_stage"] == "shadow" else st["extracted"]
        weight = f"{r['weight']:g}%" if r["weight"] is not None else "-"   # computed by the gateway
        moved = r["effective_stage"] != r["stage"]
        effective = f"[red]{r['effective_stage']}[/red]" if moved else r["effective_stage"]
        stage = [f"{r['stage']} -> {effective}" if moved else r["stage"]] if narrow else [r["stage"], effective]
        latency = ([f"{fmt_ms(st['legacy']['p99_ms'])}/{fmt_ms(new['p99_ms'])}"] if narrow else
                   [f"{fmt_ms(st['legacy']['p50_ms'])}/{fmt_ms(st['legacy']['p99_ms'])}",
                    f"{fmt_ms(new['p50_ms'])}/{fmt_ms(new['p99_ms'])}"])
        t.add_row(r["name"], r["match"], *stage, r["to"] or "-", weight, _match(r.get("shadow_match")), *latency,
                  *([f"[red]{rb['actor']}: {rb['reason']}[/red]" if rb else ""] if pinned else []))
    con.print(t)
    rooms = [r for r in routes if r.get("admission")]
    if rooms:
        con.print(room_table(rooms))
    return 0


def _match(figure: dict | None) -> str:
    """The gateway's shadow match figure with its denominator (the column header gives the window)."""
    if not figure or figure.get("rate") is None:
        return "-"
    return f"{figure['rate']:.1f}% of {figure['compared']}"


def room_table(routes: list[dict[str, Any]]) -> Any:
    """The waiting rooms: who waits, how fast they are let in, how long the queued ones waited."""
    from rich.table import Table as RTable

    t = RTable(show_edge=False, title="waiting rooms", title_justify="left")
    for col in ("route", "rate", "line", "let in", "wait p50/p99 s", "store"):
        t.add_column(col)
    for r in routes:
        a = r["admission"]
        t.add_row(r["name"], "[yellow]paused[/yellow]" if a["paused"] else a["rate_text"],
                  f"{a['waiting']} waiting (of {a['queue_limit']})", f"{a['admitted_per_s']:g}/s",
                  f"{_secs(a['wait_p50_s'])}/{_secs(a['wait_p99_s'])}",
                  a["store"] if a["store"] == "ok" else f"[red]{a['store']}[/red]")
    return t


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


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
        detail = h.get("text") or h["reason"]     # the gateway's words, the same as the console's
        style = "red" if h["kind"] in ("rollback", "reload_failed") else None
        t.add_row(when, h["kind"], h["route"] or "-", h["actor"], detail, style=style)
    console().print(t)
    return 0
