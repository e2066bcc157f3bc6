"""``strangler`` (also ``python -m gateway``): run, check and steer the gateway.

This module parses the command line and runs the chosen command; the commands live by subject in
``config_commands``, ``rollout_commands``, ``shadow_commands``, ``trace_commands`` and ``run_commands``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.cli.admission_commands import cmd_admission
from gateway.cli.client import CLIError
from gateway.cli.config_commands import cmd_check, cmd_explain, cmd_schema
from gateway.cli.fleet_commands import cmd_fleet
from gateway.cli.output import print_json
from gateway.cli.rollout_commands import cmd_history, cmd_resume, cmd_rollback, cmd_routes
from gateway.cli.run_commands import cmd_demo, cmd_up
from gateway.cli.shadow_commands import cmd_diff, cmd_diffs, cmd_replay, cmd_report
from gateway.cli.sync_commands import cmd_sync
from gateway.cli.trace_commands import cmd_trace, cmd_traces

DEFAULT_CONFIG = "routes.yaml"


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

    sp = command("demo", cmd_demo, "run the legacy app, the extracted services and the gateway from ./routes.yaml",
                 json_flag=False)
    sp.add_argument("--burst", type=int, default=0, metavar="N",
                    help="N visitors arrive at once on /api/events: watch its waiting room fill and drain")
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
    _scope_flags(sp)
    sp.add_argument("--clear", action="store_true",
                    help="forget ROUTE's stored comparisons and counters (after a fix), then exit")

    sp = command("diff", cmd_diff, "one comparison side by side, differences highlighted", admin=True)
    sp.add_argument("id", type=int)

    sp = command("report", cmd_report, "per-route shadow comparison report", admin=True)
    sp.add_argument("--route", help="only this route")
    _scope_flags(sp)

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

    sp = command("sync", cmd_sync, "mirrored writes per route: pending, delivered, dead letters; "
                 "`sync retry ROUTE` sends a route's dead letters again", admin=True)
    sp.add_argument("words", nargs="*", metavar="[retry] ROUTE")
    sp.add_argument("--limit", type=int, default=30, help="entries shown for one route")

    sp = command("traces", cmd_traces, "recent traces (newest first)", admin=True)
    sp.add_argument("--route")
    sp.add_argument("--status", choices=["ok", "error"])
    sp.add_argument("--min-ms", type=float, help="only traces that took at least this long")
    sp.add_argument("--limit", type=int, default=30)

    command("fleet", cmd_fleet, "the gateways sharing this store, and any config drift between them", admin=True)

    sp = command("admission", cmd_admission, "the waiting rooms: who waits, how fast they are let in; "
                 "`rotate-key` signs tickets with a new key", admin=True)
    sp.add_argument("action", nargs="?", choices=["rotate-key"], help="rotate the key that signs tickets")

    sp = command("trace", cmd_trace, "one trace as a waterfall: spans, services, durations to scale", admin=True)
    sp.add_argument("trace_id", help="the X-Trace-Id of a response (32 hex digits)")
    return p


def _scope_flags(sp: argparse.ArgumentParser) -> None:
    """The window of shadow results: everything stored unless one of these is given."""
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--since", metavar="DURATION", help="only results of the last DURATION (30s, 10m, 2h)")
    group.add_argument("--since-reload", action="store_true",
                       help="only results since routes.yaml last changed the route (a fix, a new ignore rule)")


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
            print_json({"ok": False, "error": str(exc)})
        print(f"strangler {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
