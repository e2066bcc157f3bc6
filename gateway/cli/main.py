"""``strangler`` (also ``python -m gateway``): run, check and steer the gateway.

Commands that talk to a running gateway use its admin API, at the address from routes.yaml or ``--admin``, with
the token from ``STRANGLER_ADMIN_TOKEN`` or the token file the gateway wrote beside routes.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import model as config_mod

DEFAULT_CONFIG = "routes.yaml"


class CLIError(Exception):
    """A user-facing failure: printed without a traceback, exit code 1 (or ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------------------
# Talking to a running gateway
# --------------------------------------------------------------------------------------------------------------


class AdminClient:
    def __init__(self, base: str, token: str | None, terminal: bool = False) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.terminal = terminal   # answers are drawn for people: control characters escaped (render.safe)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:   # reads too: the gateway may have admin.read_token set
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                data = json.loads(resp.read() or b"null")
                return _terminal_safe(data) if self.terminal else data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            raise CLIError(f"the gateway answered {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CLIError(f"cannot reach the gateway's admin API at {self.base} ({reason}). Is `strangler up` "
                           f"running? (use --admin HOST:PORT or -c FILE to point at it)") from exc


def _admin_client(args: argparse.Namespace) -> AdminClient:
    cfg = None
    path = Path(args.config)
    if path.exists():
        try:
            cfg = config_mod.load(path)
        except config_mod.ConfigError:
            cfg = None  # the running gateway may still be serving its last good table
    admin = args.admin or (f"{cfg.admin_listen[0]}:{cfg.admin_listen[1]}" if cfg else None)
    if admin is None:
        admin = _admin_from_raw(path) or "127.0.0.1:9901"
    token = os.environ.get("STRANGLER_ADMIN_TOKEN")
    if not token:
        store = cfg.store.dir if cfg else path.resolve().parent / ".strangler"
        try:
            token = (store / "admin.token").read_text().strip()
        except OSError:
            token = None
    base = admin if admin.startswith("http") else f"http://{admin}"
    return AdminClient(base, token, terminal=not getattr(args, "json", False))


def _admin_from_raw(path: Path) -> str | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
        return str(data["admin"]["listen"])
    except Exception:  # noqa: BLE001 - best effort for a broken file
        return None


# --------------------------------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------------------------------


def _terminal_safe(data: Any) -> Any:
    from gateway.cli.render import terminal_safe

    return terminal_safe(data)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=max(100, _term_width()))


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 140


def _show(args: argparse.Namespace, data: Any, render: Any) -> int:
    """``--json`` prints the API's answer as it is; otherwise ``render`` draws it for people."""
    if args.json:
        _print_json(data)
    else:
        render(_console(), data)
    return 0


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _ago(at: float | None) -> str:
    import time

    if not at:
        return "-"
    delta = time.time() - at
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as exc:
        if args.json:
            _print_json({"ok": False, "errors": exc.problems, "warnings": exc.warnings})
        else:
            for line in [*exc.problems, *exc.warnings]:
                print(line, file=sys.stderr)
        return 1
    if args.json:
        _print_json({"ok": True, "errors": [], "warnings": list(cfg.warnings), "routes": len(cfg.routes),
                     "backends": sorted(cfg.backends)})
    else:
        for line in cfg.warnings:
            print(line, file=sys.stderr)
        print(f"{path}: ok ({len(cfg.routes)} route(s), {len(cfg.backends)} backend(s))")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    _print_json(config_mod.json_schema())
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
            client = _admin_client(args)
            result = client.call("GET", "/api/explain", query={"method": args.method, "path": args.path,
                                                               "header": [f"{k}: {v}" for k, v in headers.items()]})
            result["source"] = "running gateway"
        except CLIError:
            result = None
    if result is None:
        from gateway.rollout.explain import explain
        from gateway.routing.table import Table

        try:
            cfg = config_mod.load(args.config)
        except config_mod.ConfigError as exc:
            raise CLIError("\n".join(exc.problems)) from exc
        result = explain(Table(cfg, 0), args.method, args.path, headers)
        result["source"] = f"{args.config} (no running gateway; rollbacks not shown)"
    if args.json:
        _print_json(result)
        return 0
    _print_explain(result)
    return 0


def _print_explain(r: dict[str, Any]) -> None:
    con = _console()
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
        con.print(f"  [red]rolled back[/red] by {rb['actor']} {_ago(rb['at'])}: {rb['reason']}")
    if r.get("considered"):
        from rich.table import Table as RTable

        t = RTable(title="routes in precedence order", title_justify="left", show_edge=False)
        for col in ("#", "route", "match", "result", "detail"):
            t.add_column(col)
        for i, c in enumerate(r["considered"], 1):
            style = "bold green" if c["result"] == "chosen" else ("yellow" if c["result"] == "outranked" else "dim")
            t.add_row(str(i), c["route"], c["match"], c["result"], c["detail"], style=style)
        con.print(t)


def cmd_routes(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    routes = client.call("GET", "/api/routes")
    status = client.call("GET", "/api/config")
    if args.json:
        _print_json({"config": status, "routes": routes})
        return 0
    from rich.table import Table as RTable

    con = _console()
    last = status["last_reload"]
    head = f"generation {status['generation']} from {status['path']}"
    con.print(head)
    if not last["ok"]:
        con.print(f"[bold red]LAST RELOAD FAILED[/bold red] {_ago(last['at'])}; still serving generation "
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
        weight = f"{r['weight']:g}%" if r["effective_stage"] == "canary" and r["weight"] is not None else "-"
        t.add_row(
            r["name"], r["match"], r["stage"],
            r["effective_stage"] if r["effective_stage"] == r["stage"] else f"[red]{r['effective_stage']}[/red]",
            r["to"] or "-", weight,
            "-" if r["shadow_match_rate"] is None else f"{r['shadow_match_rate']:.1f}%",
            f"{_fmt_ms(st['legacy']['p50_ms'])}/{_fmt_ms(st['legacy']['p99_ms'])}",
            f"{_fmt_ms(new['p50_ms'])}/{_fmt_ms(new['p99_ms'])}",
            f"[red]{rb['actor']}: {rb['reason']}[/red]" if rb else "",
        )
    con.print(t)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    view = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/rollback",
                       {"reason": args.reason or "manual rollback", "actor": "cli"})
    if args.json:
        _print_json(view)
    else:
        rb = view.get("rolled_back") or {}
        if view.get("already_rolled_back"):
            print(f"route {view['name']} was already rolled back by {rb.get('actor')} {_ago(rb.get('at'))}: "
                  f"{rb.get('reason')}")
        else:
            print(f"route {view['name']} now served by {view['legacy']} (rolled back); "
                  f"`strangler resume {view['name']}` undoes it")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    view = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/resume",
                       {"actor": "cli", "reason": args.reason or ""})
    if args.json:
        _print_json(view)
    elif view.get("was_rolled_back"):
        print(f"route {view['name']} resumed stage {view['stage']}")
    else:
        print(f"route {view['name']} was not rolled back; stage {view['stage']}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    rows = client.call("GET", "/api/history", query={"route": args.route, "limit": args.limit})
    if args.json:
        _print_json(rows)
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
    _console().print(t)
    return 0


def cmd_diffs(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    verdict = "mismatch" if args.mismatches else args.verdict
    rows = client.call("GET", "/api/diffs", query={"route": args.route, "verdict": verdict, "limit": args.limit})
    if args.json:
        _print_json(rows)
        return 0
    from rich.table import Table as RTable

    t = RTable(show_edge=False)
    for col in ("id", "when", "route", "request", "verdict", "status", "ms legacy/new", "differences"):
        t.add_column(col)
    colors = {"match": "green", "mismatch": "red", "ignored": "cyan", "error": "magenta"}
    for r in rows:
        fields = sorted({d["field"] for d in r["differences"]})
        t.add_row(str(r["id"]), _ago(r["at"]), r["route"], f"{r['method']} {r['path']}",
                  f"[{colors.get(r['verdict'], 'white')}]{r['verdict']}[/]",
                  f"{r['primary']['status']}/{r['shadow']['status'] or '-'}",
                  f"{_fmt_ms(r['primary']['ms'])}/{_fmt_ms(r['shadow']['ms'])}",
                  ", ".join(fields[:4]) + (" ..." if len(fields) > 4 else "") or r["reason"])
    _console().print(t)
    if not rows:
        print("no comparisons recorded yet (routes in stage shadow record them as traffic flows)")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    d = client.call("GET", f"/api/diffs/{args.id}")
    from gateway.cli.render import print_diff

    return _show(args, d, print_diff)


def cmd_report(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    rep = client.call("GET", "/api/report")
    from gateway.cli.render import print_report

    return _show(args, rep, print_report)


def cmd_replay(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    res = client.call("POST", f"/api/routes/{urllib.parse.quote(args.route)}/replay",
                      query={"limit": args.limit, "verdict": args.verdict})
    if args.json:
        _print_json(res)
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


def cmd_traces(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    rows = client.call("GET", "/api/traces", query={"route": args.route, "limit": args.limit,
                                                   "status": args.status, "min_ms": args.min_ms})
    from gateway.cli.waterfall import print_traces

    return _show(args, rows, print_traces)


def cmd_trace(args: argparse.Namespace) -> int:
    client = _admin_client(args)
    trace = client.call("GET", f"/api/traces/{urllib.parse.quote(args.trace_id.strip().lower())}")
    from gateway.cli.waterfall import print_trace

    return _show(args, trace, print_trace)


def cmd_up(args: argparse.Namespace) -> int:
    from gateway.runtime.launch import run_gateway, worker_index_from_env

    index, workers = worker_index_from_env()
    if index is None:
        workers = args.workers
    if workers < 1:
        raise CLIError("--workers must be at least 1")
    return run_gateway(args.config, listen=args.listen, admin=args.admin, workers=workers, worker_index=index)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import run_demo

    return run_demo(args.config)


# --------------------------------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strangler")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strangler", description="Strangler: a strangler-fig API gateway.")
    p.add_argument("--version", action="version", version=f"strangler {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, fn: Any, help_text: str, *, admin: bool = False, json_flag: bool = True
                ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(fn=fn)
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="routes.yaml (default: ./routes.yaml)")
        if admin:
            sp.add_argument("--admin", help="admin address HOST:PORT of the running gateway (default: from -c)")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = command("up", cmd_up, "run the gateway", json_flag=False)
    sp.add_argument("--listen", help="public HOST:PORT (overrides routes.yaml)")
    sp.add_argument("--admin", help="admin HOST:PORT (overrides routes.yaml)")
    sp.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (SO_REUSEPORT)")

    command("demo", cmd_demo, "run the legacy app, the extracted services and the gateway from ./routes.yaml",
            json_flag=False)
    command("check", cmd_check, "validate routes.yaml: exit 0 if valid, else print FILE:LINE: lines and exit 1")
    command("schema", cmd_schema, "print the JSON Schema of routes.yaml (for editors)", json_flag=False)
    command("routes", cmd_routes, "the route table of the running gateway", admin=True)

    sp = command("explain", cmd_explain, "which route and backend a request reaches, and why", admin=True)
    sp.add_argument("method")
    sp.add_argument("path")
    sp.add_argument("-H", "--header", action="append", help="'Name: value' (repeatable)")
    sp.add_argument("--offline", action="store_true", help="use the file only, not the running gateway")

    sp = command("diffs", cmd_diffs, "recent shadow comparisons", admin=True)
    sp.add_argument("route", nargs="?")
    sp.add_argument("--mismatches", action="store_true", help="only mismatches")
    sp.add_argument("--verdict", choices=["match", "mismatch", "ignored", "error"])
    sp.add_argument("--limit", type=int, default=30)

    sp = command("diff", cmd_diff, "one comparison side by side, differences highlighted", admin=True)
    sp.add_argument("id", type=int)

    command("report", cmd_report, "per-route shadow comparison report", admin=True)

    sp = command("replay", cmd_replay, "re-send recorded requests to the extracted backend and compare again",
                 admin=True)
    sp.add_argument("route")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--verdict", choices=["match", "mismatch", "ignored", "error"])

    sp = command("rollback", cmd_rollback, "pin a route to legacy now (persisted)", admin=True)
    sp.add_argument("route")
    sp.add_argument("--reason")

    sp = command("resume", cmd_resume, "undo a rollback: the route returns to its stage", admin=True)
    sp.add_argument("route")
    sp.add_argument("--reason")

    sp = command("history", cmd_history, "reloads, rollbacks, resumes, guard decisions", admin=True)
    sp.add_argument("route", nargs="?")
    sp.add_argument("--limit", type=int, default=100)

    sp = command("traces", cmd_traces, "recent traces (newest first)", admin=True)
    sp.add_argument("--route")
    sp.add_argument("--status", choices=["ok", "error"])
    sp.add_argument("--min-ms", type=float, help="only traces that took at least this long")
    sp.add_argument("--limit", type=int, default=30)

    sp = command("trace", cmd_trace, "one trace as a waterfall: spans, services, durations to scale", admin=True)
    sp.add_argument("trace_id", help="the X-Trace-Id of a response (32 hex digits)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    try:
        return int(args.fn(args) or 0)
    except CLIError as exc:
        if getattr(args, "json", False):
            # Scripts reading --json get JSON on stdout for failures too.
            _print_json({"ok": False, "error": str(exc)})
        print(f"strangler {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

