"""``strangler sync [ROUTE]`` (mirrored writes per route: pending, delivered, dead letters, lag, verify verdicts)
and ``strangler sync retry ROUTE`` (send a route's dead letters again)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from gateway.cli.client import CLIError, admin_client
from gateway.cli.output import ago, console, print_json


def cmd_sync(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words and words[0] == "retry":
        if len(words) != 2:
            raise CLIError("usage: strangler sync retry ROUTE", code=2)
        return _retry(args, words[1])
    if len(words) > 1:
        raise CLIError("usage: strangler sync [ROUTE] | strangler sync retry ROUTE", code=2)
    client = admin_client(args)
    route = words[0] if words else None
    data = client.call("GET", "/api/sync", query={"route": route, "limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    _print_routes(data)
    if route is not None:
        _print_entries(data.get("entries") or [])
    return 0


def _retry(args: argparse.Namespace, route: str) -> int:
    client = admin_client(args)
    res = client.call("POST", f"/api/sync/{urllib.parse.quote(route)}/retry")
    if args.json:
        print_json(res)
    else:
        print(f"route {res['route']}: {res['retried']} dead letter(s) sent again, in their original order")
    return 0


def _print_routes(data: dict[str, Any]) -> None:
    from rich.table import Table as RTable

    t = RTable(show_edge=False)
    for col in ("route", "stage", "pending", "oldest pending", "delivered", "dead", "verified", "head of queue"):
        t.add_column(col)
    for r in data["routes"]:
        age = r["oldest_pending_age_s"]
        verified = r["verified"]
        total = sum(verified.values())
        head = r["head"] or {}
        t.add_row(r["route"] + ("" if r["sync"] else " (sync off)"), r["effective_stage"] or "-", str(r["pending"]),
                  "-" if age is None else f"{age:.1f}s", str(r["delivered"]),
                  f"[red]{r['dead']}[/red]" if r["dead"] else "0",
                  f"{_agreed(verified) / total:.1%} of {total} agree" if total else "-",
                  f"[yellow]{head.get('attempts')} attempt(s): {head.get('error')}[/yellow]" if head.get("error")
                  else "")
    con = console()
    con.print(t)
    lag = data["lag"]
    if lag["p50_s"] is not None:
        con.print(f"lag (answer to the other side's 2xx): p50 {lag['p50_s'] * 1000:.1f} ms, "
                  f"p99 {lag['p99_s'] * 1000:.1f} ms, max {lag['max_s'] * 1000:.1f} ms")
    if not data["routes"]:
        print("no route has `sync:`; add `sync: {}` to a route in routes.yaml to mirror its writes")


def _print_entries(entries: list[dict[str, Any]]) -> None:
    from rich.table import Table as RTable

    t = RTable(show_edge=False)
    for col in ("seq", "when", "write", "answered by", "to", "state", "attempts", "last", "verify"):
        t.add_column(col)
    colors = {"pending": "yellow", "delivered": "green", "dead": "red"}
    for e in entries:
        verify = e["verify"] or {}
        fields = sorted({d["field"] for d in verify.get("differences", [])})
        t.add_row(str(e["seq"]), ago(e["created_at"]), f"{e['method']} {e['raw_target']}", e["answered_by"],
                  e["target"], f"[{colors.get(e['state'], 'white')}]{e['state']}[/]", str(e["attempts"]),
                  (e["last_error"] or str(e["last_status"] or ""))[:60],
                  (verify.get("verdict", "") + (f" ({', '.join(fields[:3])})" if fields else "")))
    console().print(t)


def _agreed(verified: dict[str, int]) -> int:
    """Verifications where both sides held the same data (``ignored``: equal but for ignored fields)."""
    return verified.get("match", 0) + verified.get("ignored", 0)


def print_sync_report(con: Any, data: dict[str, Any]) -> None:
    """The sync part of ``strangler report``: per synced route, how much of its shadow mismatch is drift (a
    mirrored write was still on its way), and how often a read after a mirrored write found both sides equal."""
    from rich.text import Text

    for r in data.get("routes", []):
        parts = [f"{r['route']}: sync {r['pending']} pending, {r['delivered']} delivered, {r['dead']} dead"]
        drift = r.get("drift") or {}
        if drift.get("mismatches"):
            parts.append(f"of the last {drift['mismatches']} shadow mismatches, {drift['drift']} are drift (a mirrored "
                         f"write to the same path was on its way) and {drift['real']} real differences")
        total = sum(r["verified"].values())
        if total:
            parts.append(f"sync verified: {_agreed(r['verified']) / total:.1%} of {total} reads after a mirrored "
                         "write found both sides equal")
        con.print(Text("; ".join(parts), style="red" if r["dead"] else None))
