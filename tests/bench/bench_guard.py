"""How many failed requests do users see between a new service starting to fail and the guard's rollback?

    python -m tests.bench.bench_guard [--concurrency 8] [--min-requests 50] [--healthy 500]

Runs a real gateway in process in front of two loopback backends (legacy, and a new service that can be switched
to answer 500), with the route in canary at 100% and a guard (`window 60s, max_error_rate 2%`). Two cases:

- cold: the new service fails from its first request (no healthy traffic in the window yet);
- warm: the new service served ``--healthy`` good requests first, then starts failing.

Clients keep ``--concurrency`` requests in flight; the count is every 5xx a client received from the moment the
backend started failing until the gateway answered from legacy again. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.support import public_url, run_gateway, serve_app, write_routes


class Switchable:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            status = 500 if self.failing else 200
            return web.Response(status=status, text=self.name, headers={"X-Served-By": self.name})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


async def run_case(healthy: int, concurrency: int, min_requests: int) -> dict[str, int]:
    legacy, new = Switchable("legacy"), Switchable("new")
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
            path = write_routes(Path(tmp), f"""\
                backends:
                  legacy: {{url: "{lu}"}}
                  new: {{url: "{nu}"}}
                fallback: legacy
                routes:
                  - name: feature
                    match: {{path: {{prefix: /f}}}}
                    to: new
                    stage: canary
                    canary: {{weight: 100}}
                    guard: {{window: 60s, min_requests: {min_requests}, max_error_rate: 2%}}
                """)
            async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
                url = public_url(gw) + "/f"
                for _ in range(healthy):
                    async with s.get(url) as resp:
                        await resp.read()
                new.failing = True
                failed = served_by_legacy = sent = 0
                stop = asyncio.Event()

                async def client() -> None:
                    nonlocal failed, served_by_legacy, sent
                    while not stop.is_set() and sent < 10_000:
                        sent += 1
                        async with s.get(url) as resp:
                            await resp.read()
                            if resp.status >= 500:
                                failed += 1
                            elif resp.headers.get("X-Served-By") == "legacy":
                                served_by_legacy += 1
                                if served_by_legacy >= 20:
                                    stop.set()

                await asyncio.gather(*(client() for _ in range(concurrency)))
                pinned = "feature" in gw.state.pins
    return {"healthy_before": healthy, "failed_seen_by_users": failed, "requests_sent": sent,
            "rolled_back": int(pinned)}


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--min-requests", type=int, default=50)
    parser.add_argument("--healthy", type=int, default=500)
    args = parser.parse_args(argv)
    print(f"guard: window 60s, min_requests {args.min_requests}, max_error_rate 2%; "
          f"{args.concurrency} requests in flight")
    for label, healthy in (("cold", 0), ("warm", args.healthy)):
        result = await run_case(healthy, args.concurrency, args.min_requests)
        print(f"  {label:5} ({healthy} healthy requests first): {result['failed_seen_by_users']} failed requests "
              f"seen by users before the rollback; rolled back: {'yes' if result['rolled_back'] else 'NO'}")
        if not result["rolled_back"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
