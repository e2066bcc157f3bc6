"""Commands about traces: ``traces`` (recent ones) and ``trace`` (one as a waterfall)."""

from __future__ import annotations

import argparse
import urllib.parse

from gateway.cli.client import admin_client
from gateway.cli.output import show


def cmd_traces(args: argparse.Namespace) -> int:
    client = admin_client(args)
    rows = client.call("GET", "/api/traces", query={"route": args.route, "limit": args.limit,
                                                   "status": args.status, "min_ms": args.min_ms})
    from gateway.cli.waterfall import print_traces

    return show(args, rows, print_traces)


def cmd_trace(args: argparse.Namespace) -> int:
    client = admin_client(args)
    trace = client.call("GET", f"/api/traces/{urllib.parse.quote(args.trace_id.strip().lower())}")
    from gateway.cli.waterfall import print_trace

    return show(args, trace, print_trace)
