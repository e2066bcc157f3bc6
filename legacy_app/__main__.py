"""``python -m legacy_app --host H --port P --db FILE``: run the monolith."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web

from legacy_app.app import SERVICE_NAME, create_app
from observability.logging import setup_logging
from observability.tracing import setup_service_tracing


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m legacy_app", description="Run the legacy shop monolith.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--db", default="./legacy.db", help="SQLite file, created and seeded if empty (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(SERVICE_NAME)
    setup_service_tracing(SERVICE_NAME)
    web.run_app(create_app(args.db), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
