"""Commands that run things: ``up`` (the gateway) and ``demo`` (the legacy app, the extracted services and the
gateway together).
"""

from __future__ import annotations

import argparse

from gateway.cli.client import CLIError


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

    if args.burst < 0:
        raise CLIError("--burst must be a number of visitors, 0 or more")
    return run_demo(args.config, burst=args.burst)
