"""Shadow benchmark: (a) the comparison store stays within its bounds after 100,000 shadowed requests; (b) a
shadow target that hangs or refuses leaves the primary's latency and answers as they are without a shadow.

Run: ``python -m tests.bench.bench_shadow_store [--records 100000] [--requests 3000] [--rounds 2]``.

(a) drives the ``DiffStore`` directly (as the dispatcher does, one ``put`` per comparison, plus a noise sample on
10% of them) with records shaped like the demo's reviews comparisons (~1.5 KiB JSON per side, a 70/25/5 split
of mismatch/ignored/match, a dynamic field on 1% of them), then reports the file size and the row counts against
the bounds. (b) starts one gateway in a child process with a fast in-process legacy backend and three routes:
``/plain`` (stage legacy), ``/hang`` (100% shadow to a server that accepts and never answers) and ``/refuse``
(100% shadow to a closed port); the parent sends the same requests to each in alternating phases with a small
fixed concurrency and reports p50/p99 client latency per route and whether every answer was byte-identical
(status, headers but Date and X-Trace-Id, body).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sqlite3
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from gateway.stores.diff_schema import MAX_FIELDS_PER_ROUTE, MAX_NOISE_FIELDS
from gateway.stores.diffs import DiffStore, Record

MAX_SAMPLES = 200           # the routes.yaml default (store.max_samples)
ROUTES = ("reviews", "likes", "products")


# ---------------------------------------------------------------------------------------------------------- (a)

def _reviews_doc(product: int, average: float, now: float) -> bytes:
    items = [{"id": product * 10 + i, "author": f"Author {i}", "rating": 1 + (product + i) % 5,
              "text": "Does the job, arrived on time.", "created_at": "2024-05-16T02:52:00Z"} for i in range(8)]
    return json.dumps({"product_id": product, "count": len(items), "average": average, "items": items,
                       "generated_at": f"{now:.6f}"}).encode()


def _record(i: int, rng: random.Random) -> Record:
    route = ROUTES[i % len(ROUTES)]
    roll = rng.random()
    verdict = "mismatch" if roll < 0.70 else "ignored" if roll < 0.95 else "match"
    now = time.time()
    diffs = []
    if verdict == "mismatch":
        diffs.append({"path": "$.average", "field": "$.average", "kind": "changed", "legacy": 4.33, "shadow": 4.3})
        if rng.random() < 0.01:  # a field never seen before (a map keyed by id): the field table must stay bounded
            diffs.append({"path": f"$.extra_{i}", "field": f"$.extra_{i}", "kind": "extra", "legacy": None,
                          "shadow": 1})
    ignored = [] if verdict == "match" else [{"path": "$.generated_at", "field": "$.generated_at",
                                              "kind": "changed", "legacy": "a", "shadow": "b"}]
    headers = [("Content-Type", "application/json"), ("X-Served-By", "legacy")]
    return Record(route=route, method="GET", target=f"/api/products/{i % 500}/reviews", verdict=verdict,
                  primary_backend="legacy", shadow_backend=route, primary_status=200, shadow_status=200,
                  primary_ms=1.0 + rng.random() * 3, shadow_ms=1.5 + rng.random() * 4, differences=diffs,
                  ignored=ignored, request_headers=[("Accept", "application/json"), ("Authorization", "[redacted]")],
                  primary_headers=headers, primary_body=_reviews_doc(i % 500, 4.33, now),
                  shadow_headers=headers, shadow_body=_reviews_doc(i % 500, 4.3, now + 0.001))


def bench_store(records: int) -> dict[str, Any]:
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "diffs.db"
        store = DiffStore(path, max_samples=MAX_SAMPLES)
        started = time.perf_counter()
        for i in range(records):
            store.put(_record(i, rng))
            if i % 10 == 0:
                store.noise_sample(ROUTES[i % len(ROUTES)], frozenset({"$.generated_at", f"$.id_{i % 997}"}))
            if i % 2000 == 1999:
                store.flush(60)  # the dispatcher never outruns the writer by more than its queue either
        assert store.flush(120)
        elapsed = time.perf_counter() - started
        db = sqlite3.connect(path)
        try:
            samples = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            per_kind = db.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM samples GROUP BY route, verdict, "
                                  "replay)").fetchone()[0]
            plain = db.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM samples WHERE id NOT IN (SELECT "
                               "last_id FROM fields WHERE last_id IS NOT NULL) GROUP BY route, verdict, replay)"
                               ).fetchone()[0]
            fields = db.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM fields GROUP BY route)").fetchone()[0]
            noise = db.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM noise GROUP BY route)").fetchone()[0]
            counted = db.execute("SELECT SUM(n) FROM verdicts").fetchone()[0]
        finally:
            db.close()
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("diffs.db*"))
    limit = len(ROUTES) * (3 * MAX_SAMPLES + MAX_FIELDS_PER_ROUTE)
    return {"records": records, "seconds": round(elapsed, 1), "records_per_s": round(records / elapsed),
            "dropped": store.dropped, "verdicts_counted": counted, "db_bytes": size,
            "samples": samples, "samples_bound": limit, "max_samples_per_route_verdict": plain,
            "max_samples_per_route_verdict_with_field_examples": per_kind, "max_samples": MAX_SAMPLES,
            "max_fields_per_route": fields, "fields_bound": MAX_FIELDS_PER_ROUTE, "max_noise_fields_per_route": noise,
            "noise_bound": MAX_NOISE_FIELDS,
            "within_bounds": samples <= limit and plain <= MAX_SAMPLES and fields <= MAX_FIELDS_PER_ROUTE
            and noise <= MAX_NOISE_FIELDS}


# ---------------------------------------------------------------------------------------------------------- (b)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(directory: Path) -> None:
    """Child process: a fast legacy backend, a hanging server and the gateway; prints the public URL."""
    from aiohttp import web

    from gateway.config.parse import load
    from gateway.runtime.gateway import Gateway

    body = json.dumps({"id": 42, "name": "bench item", "price": 19.99, "stock": 7, "tags": ["a", "b"]}).encode()

    async def item(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json",
                            headers={"X-Served-By": "legacy", "ETag": '"42"', "Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", item)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    legacy_port = runner.addresses[0][1]

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()

    hanging = await asyncio.start_server(hang, "127.0.0.1", 0)
    hang_port = hanging.sockets[0].getsockname()[1]
    refused_port = _free_port()
    (directory / "routes.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        listen: 127.0.0.1:0
        admin: {{listen: 127.0.0.1:0}}
        store: {{dir: store}}
        backends:
          legacy: {{url: "http://127.0.0.1:{legacy_port}"}}
          hang: {{url: "http://127.0.0.1:{hang_port}"}}
          refuse: {{url: "http://127.0.0.1:{refused_port}"}}
        fallback: legacy
        routes:
          - name: plain
            match: {{path: {{prefix: /plain}}}}
            stage: legacy
          - name: hang
            match: {{path: {{prefix: /hang}}}}
            to: hang
            stage: shadow
            shadow: {{percent: 100, timeout: 2s}}
          - name: refuse
            match: {{path: {{prefix: /refuse}}}}
            to: refuse
            stage: shadow
            shadow: {{percent: 100, timeout: 2s}}
        """))
    gw = Gateway(load(directory / "routes.yaml"))
    await gw.start()
    host, port = gw.bound["public"]
    ahost, aport = gw.bound["admin"]
    print(json.dumps({"public": f"http://{host}:{port}", "admin": f"http://{ahost}:{aport}"}), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    finally:
        await gw.stop()
        hanging.close()
        await runner.cleanup()


async def _phase(session: Any, url: str, requests: int, concurrency: int) -> tuple[list[float], set[Any]]:
    latencies: list[float] = []
    answers: set[Any] = set()
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            async with session.get(f"{url}/{i % 50}") as r:
                data = await r.read()
                latencies.append(time.perf_counter() - started)
                # Date and the per-request trace id differ between any two answers, shadow or not.
                headers = tuple((k, v) for k, v in r.headers.items() if k.lower() not in ("date", "x-trace-id"))
                answers.add((r.status, headers, data))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, answers


async def _quiet(session: Any, admin: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(admin + "/api/report") as r:
            if (await r.json())["store"]["queue"] == 0:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("shadow copies still pending")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_latency(requests: int, rounds: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.bench.bench_shadow_store",
                                                    "--serve", tmp, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        urls = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        base = urls["public"]
        results: dict[str, list[float]] = {"plain": [], "hang": [], "refuse": []}
        answers: dict[str, set[Any]] = {"plain": set(), "hang": set(), "refuse": set()}
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
                await _phase(s, f"{base}/plain", 500, concurrency)  # warm-up
                for _ in range(rounds):
                    for name in ("plain", "hang", "refuse"):
                        lat, ans = await _phase(s, f"{base}/{name}", requests, concurrency)
                        results[name] += lat
                        answers[name] |= ans
                        # Let the copies of this phase finish (the hanging ones time out, 64 at a time) so that
                        # each phase is measured on its own.
                        await _quiet(s, urls["admin"])
                async with s.get(urls["admin"] + "/api/report") as r:
                    report = await r.json()
        finally:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 30)
    base_p50 = statistics.median(results["plain"])
    out: dict[str, Any] = {"requests_per_route": requests * rounds, "concurrency": concurrency}
    for name, lat in results.items():
        p50, p99 = statistics.median(lat), _quantile(lat, 0.99)
        out[name] = {"p50_ms": round(p50 * 1000, 3), "p99_ms": round(p99 * 1000, 3),
                     "p50_vs_plain": round(p50 / base_p50, 3),
                     "p50_within_10pct_plus_1ms": p50 <= base_p50 * 1.10 + 0.001,
                     "distinct_answers": len(answers[name]),
                     "identical_to_plain": answers[name] == answers["plain"]}
    for entry in report["routes"]:
        if entry["route"] in ("hang", "refuse"):
            out[entry["route"]]["verdicts"] = entry["verdicts"]
            out[entry["route"]]["skipped"] = entry["skipped"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=3000, help="requests per route and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--only", choices=("store", "latency"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(_serve(Path(args.serve)))
        return
    if args.only != "latency":
        print("(a) comparison store after", args.records, "shadowed requests:", flush=True)
        print(json.dumps(bench_store(args.records), indent=2), flush=True)
    if args.only != "store":
        print("(b) primary latency with 100% shadow to a hanging and to a refusing target:", flush=True)
        print(json.dumps(asyncio.run(bench_latency(args.requests, args.rounds, args.concurrency)), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
