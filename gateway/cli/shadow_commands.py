"""Commands about shadow comparisons: ``diffs`` (recent ones), ``diff`` (one side by side), ``report`` (per route)
and ``replay`` (recorded requests sent to the extracted backend again).
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.client import AdminClient, CLIError, admin_client
from gateway.cli.output import ago, console, fmt_ms, print_json, show


def _since(args: argparse.Namespace) -> str | None:
    return "reload" if args.since_reload else args.since


def cmd_diffs(args: argparse.Namespace) -> int:
    client = admin_client(args)
    if args.clear:
        return _clear(args, client)
    verdict = "mismatch" if args.mismatches else args.verdict
    if args.since_reload and not args.route:
        raise CLIError("--since-reload is per route: name the route (strangler diffs ROUTE --since-reload)")
    rows = client.call("GET", "/api/diffs", query={"route": args.route, "verdict": verdict, "limit": args.limit,
                                                  "since": _since(args)})
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table as RTable

    t = RTable(show_edge=False)
    for col in ("id", "when", "route", "request", "verdict", "status", "ms legacy/new", "differences"):
        t.add_column(col, overflow="fold")     # a path or a field is folded, never cut
    colors = {"match": "green", "mismatch": "red", "ignored": "cyan", "error": "magenta"}
    for r in rows:
        fields = sorted({d["field"] for d in r["differences"]})
        t.add_row(str(r["id"]), ago(r["at"]), r["route"], f"{r['method']} {r['path']}",
                  f"[{colors.get(r['verdict'], 'white')}]{r['verdict']}[/]",
                  f"{r['primary']['status']}/{r['shadow']['status'] or '-'}",
                  f"{fmt_ms(r['primary']['ms'])}/{fmt_ms(r['shadow']['ms'])}",
                  ", ".join(fields[:4]) + (" ..." if len(fields) > 4 else "") or r["reason"])
    console().print(t)
    if not rows:
        print("no comparisons recorded" + (" in this window" if _since(args) else " yet")
              + " (routes in stage shadow record them as traffic flows)")
    return 0


def _clear(args: argparse.Namespace, client: AdminClient) -> int:
    if not args.route:
        raise CLIError("--clear needs the route whose results to forget: strangler diffs ROUTE --clear")
    res = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/clear")
    if args.json:
        print_json(res)
    else:
        print(f"cleared the stored comparisons of route {res['route']}: its report starts again from now")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    client = admin_client(args)
    d = client.call("GET", f"/api/diffs/{args.id}")
    from gateway.cli.render import print_diff

    return show(args, d, print_diff)


def cmd_report(args: argparse.Namespace) -> int:
    client = admin_client(args)
    rep = client.call("GET", "/api/report", query={"route": args.route, "since": _since(args)})
    rep["sync"] = client.call("GET", "/api/sync")
    from gateway.cli.render import print_report
    from gateway.cli.sync_commands import print_sync_report

    def both(con: Any, data: dict[str, Any]) -> None:
        print_report(con, data)
        print_sync_report(con, data["sync"])

    return show(args, rep, both)


def cmd_replay(args: argparse.Namespace) -> int:
    client = admin_client(args)
    res = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/replay",
                      query={"limit": args.limit, "verdict": args.verdict})
    if args.json:
        print_json(res)
        return 0
    if not res["replayed"]:
        print(f"no recorded comparisons for route {res['route']} to replay: requests are recorded while the route is "
              "in stage shadow (or extracted with reverse_shadow)")
        return 0
    print(f"replayed {res['replayed']} recorded request(s) of route {res['route']} against the extracted backend")
    for r in res["results"]:
        fields = sorted({d["field"] for d in r["differences"]})
        print(f"  #{r['sample']}: was {r['was']}, now {r['now']}" + (f"  ({', '.join(fields[:5])})" if fields else "")
              + (f"  {r['reason']}" if r["now"] == "error" else ""))
    print("verdicts now: " + (", ".join(f"{k} {v}" for k, v in sorted(res["verdicts"].items())) or "none"))
    return 0
