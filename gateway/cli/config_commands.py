"""Commands about routes.yaml: ``check`` (validate it), ``schema`` (its JSON Schema) and ``explain`` (which route
and backend a request reaches, asked of the running gateway or, without one, of the file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.client import CLIError, admin_client
from gateway.cli.output import ago, console, print_json
from gateway.config.document import json_schema
from gateway.config.parse import ConfigError, load
from gateway.config.tls import tls_files


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        cfg = load(path)
    except ConfigError as exc:
        if args.json:
            print_json({"ok": False, "errors": exc.problems, "warnings": exc.warnings})
        else:
            for line in [*exc.problems, *exc.warnings]:
                print(line, file=sys.stderr)
        return 1
    tls = tls_files(dict(cfg.backends), cfg.tls)
    if args.json:
        print_json({"ok": True, "errors": [], "warnings": list(cfg.warnings), "routes": len(cfg.routes),
                     "backends": sorted(cfg.backends), "tls": tls})
    else:
        for line in cfg.warnings:
            print(line, file=sys.stderr)
        print(f"{path}: ok ({len(cfg.routes)} route(s), {len(cfg.backends)} backend(s))")
        for line in tls:
            print(line)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print_json(json_schema())
    return 0


def _parse_headers(values: list[str] | None) -> dict[str, str]:
    headers = {}
    for h in values or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise CLIError(f"-H expects 'Name: value', got {h!r}")
        headers[name.strip()] = value.strip()
    return headers


def cmd_explain(args: argparse.Namespace) -> int:
    headers = _parse_headers(args.header)
    result = None
    if not args.offline:
        try:
            client = admin_client(args)
            result = client.call("GET", "/api/explain", query={"method": args.method, "path": args.path,
                                                               "header": [f"{k}: {v}" for k, v in headers.items()]})
            result["source"] = "running gateway"
        except CLIError:
            result = None
    if result is None:
        from gateway.rollout.explain import explain
        from gateway.routing.table import Table

        try:
            cfg = load(args.config)
        except ConfigError as exc:
            raise CLIError("\n".join(exc.problems)) from exc
        result = explain(Table(cfg, 0), args.method, args.path, headers)
        result["source"] = f"{args.config} (no running gateway; rollbacks not shown)"
    if args.json:
        print_json(result)
        return 0
    _print_explain(result)
    return 0


def _print_explain(r: dict[str, Any]) -> None:
    con = console()
    con.print(f"[bold]{r['method']} {r['target']}[/bold]  (from {r['source']})")
    if r.get("outcome") == "refused":
        con.print(f"  refused with {r['status']}: {r['why']}")
        return
    if r.get("normalized_path") and r["normalized_path"] != r["target"].split("?")[0]:
        con.print(f"  normalised path: {r['normalized_path']}")
    con.print(f"  route:   [bold]{r['route']}[/bold]  stage {r['stage']}"
              + (f" (effective: {r['effective_stage']})" if r["effective_stage"] != r["stage"] else ""))
    con.print(f"  backend: [bold]{r['backend']}[/bold]")
    con.print(f"  why:     {r['why']}")
    if r.get("rolled_back"):
        rb = r["rolled_back"]
        con.print(f"  [red]rolled back[/red] by {rb['actor']} {ago(rb['at'])}: {rb['reason']}")
    if r.get("considered"):
        from rich.table import Table as RTable

        t = RTable(title="routes in precedence order", title_justify="left", show_edge=False)
        for col in ("#", "route", "match", "result", "detail"):
            t.add_column(col)
        for i, c in enumerate(r["considered"], 1):
            style = "bold green" if c["result"] == "chosen" else ("yellow" if c["result"] == "outranked" else "dim")
            t.add_row(str(i), c["route"], c["match"], c["result"], c["detail"], style=style)
        con.print(t)
