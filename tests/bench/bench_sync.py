"""What mirrored writes (``sync:``) cost: the latency a synced write adds, how fast the journal drains, and how
big the journal gets.

    python -m tests.bench.bench_sync [--requests 2000] [--rounds 3] [--concurrency 1 16] [--backlog 5000]
                                     [--journal 100000]

1. Latency: a gateway process (``python -m gateway up``) in front of two loopback backends, with two routes that
   differ only in ``sync:`` (both in stage extracted, so a synced write is journaled for the monolith). POSTs are
   sent to one route, then the other, in turns (A B, A B, ...) so machine drift falls on both; p50 and p99 as the
   client sees them, per concurrency (1: every write pays its own fsync; more: group commit shares them), and
   at a paced ``--rate`` (an open loop below saturation).
2. Throughput of mirrored writes: the monolith answers mirrored writes 503 while ``--backlog`` writes are taken,
   then comes back; the time until ``GET /api/sync`` shows nothing pending gives the delivery rate.
3. Journal size: ``--journal`` entries like the demo's likes appended to a fresh journal (pending), then all
   delivered (bodies dropped), then pruned by retention; the file's size at each step.

Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.stores.api import JournalEntry
from gateway.stores.journal import SQLiteJournal
from tests.support import free_port, serve_app, wait_http

ROUTES = """\
version: 1
listen: 127.0.0.1:{public}
admin: {{listen: 127.0.0.1:{admin}}}
store: {{dir: store}}
tracing: {{sample: 0%, response_header: false}}
backends:
  legacy: {{url: "{legacy}"}}
  new: {{url: "{new}"}}
fallback: legacy
routes:
  - name: synced
    match: {{path: {{template: "/synced/{{id}}"}}}}
    to: new
    stage: extracted
    sync: {{}}
  - name: plain
    match: {{path: {{template: "/plain/{{id}}"}}}}
    to: new
    stage: extracted
"""


class Side:
    """A backend that answers every request 200 with a small JSON body; ``down`` makes mirrored writes 503."""

    def __init__(self) -> None:
        self.down = False
        self.mirrored = 0

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            if request.headers.get("X-Strangler-Sync"):
                if self.down:
                    return web.Response(status=503)
                self.mirrored += 1
            return web.json_response({"product_id": 1, "count": 1})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


async def _posts(url: str, n: int, concurrency: int) -> list[float]:
    lat: list[float] = []
    queue = iter(range(n))

    async def worker(s: aiohttp.ClientSession) -> None:
        for i in queue:
            started = time.perf_counter()
            async with s.post(f"{url}/{i % 500}", json={"user": f"user-{i:05d}"}) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            lat.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return lat


async def _paced(url: str, n: int, rate: float) -> list[float]:
    """``n`` POSTs started at a fixed ``rate`` per second, whatever the answers take (an open loop): the latency
    below saturation, where a closed loop would measure the throughput."""
    lat: list[float] = []

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        started = time.perf_counter()
        async with s.post(f"{url}/{i % 500}", json={"user": f"user-{i:05d}"}) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        lat.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(s, i)))
        await asyncio.gather(*tasks)
    return lat


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


def _admin(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


async def _pending(admin: int) -> int:
    rows = (await asyncio.to_thread(_admin, admin, "/api/sync?route=synced"))["routes"]
    return int(rows[0]["pending"]) if rows else 0


async def latency_and_throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    legacy, new = Side(), Side()
    out: dict[str, Any] = {}
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        ports = {"public": free_port(), "admin": free_port()}
        config = tmp / "routes.yaml"
        config.write_text(ROUTES.format(legacy=lu, new=nu, **ports))
        with open(tmp / "gateway.log", "wb") as log:
            gw = subprocess.Popen([sys.executable, "-m", "gateway", "up", "-c", str(config)], cwd=tmp,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{ports['admin']}/readyz")
            base = f"http://127.0.0.1:{ports['public']}"
            for concurrency in args.concurrency:
                lat: dict[str, list[float]] = {"plain": [], "synced": []}
                await _posts(base + "/plain", 200, concurrency)        # warm-up, both routes
                await _posts(base + "/synced", 200, concurrency)
                for _ in range(args.rounds):
                    for name in ("plain", "synced"):
                        lat[name] += await _posts(f"{base}/{name}", args.requests, concurrency)
                    lag = (await asyncio.to_thread(_admin, ports["admin"], "/api/sync"))["lag"]
                    while await _pending(ports["admin"]):   # the next plain round does not share the loop
                        await asyncio.sleep(0.05)          # with deliveries left from this one
                row = {name: {"p50_ms": round(_pct(v, 0.5), 3), "p99_ms": round(_pct(v, 0.99), 3),
                              "requests": len(v)} for name, v in lat.items()}
                row["added_p50_ms"] = round(row["synced"]["p50_ms"] - row["plain"]["p50_ms"], 3)
                row["added_p99_ms"] = round(row["synced"]["p99_ms"] - row["plain"]["p99_ms"], 3)
                out[f"latency_c{concurrency}"] = row
                row["lag"] = lag   # from the answer to the other side's 2xx, the last deliveries under load
            if args.rate:
                lat = {"plain": [], "synced": []}
                for _ in range(args.rounds):
                    for name in ("plain", "synced"):
                        lat[name] += await _paced(f"{base}/{name}", args.requests, args.rate)
                    while await _pending(ports["admin"]):
                        await asyncio.sleep(0.05)
                row = {name: {"p50_ms": round(_pct(v, 0.5), 3), "p99_ms": round(_pct(v, 0.99), 3),
                              "requests": len(v)} for name, v in lat.items()}
                row["added_p50_ms"] = round(row["synced"]["p50_ms"] - row["plain"]["p50_ms"], 3)
                row["added_p99_ms"] = round(row["synced"]["p99_ms"] - row["plain"]["p99_ms"], 3)
                out[f"latency_paced_{args.rate:g}_per_s"] = row
            # Throughput: a backlog taken while the monolith refuses mirrored writes, then delivered.
            legacy.down = True
            await _posts(base + "/synced", args.backlog, 16)
            before = legacy.mirrored
            legacy.down = False
            started = time.perf_counter()
            while await _pending(ports["admin"]):
                await asyncio.sleep(0.05)
            took = time.perf_counter() - started
            out["delivery"] = {"backlog": args.backlog, "seconds": round(took, 2),
                               "per_second": round((legacy.mirrored - before) / took, 1)}
            out["lag_after_backlog"] = (await asyncio.to_thread(_admin, ports["admin"], "/api/sync"))["lag"]
        finally:
            gw.terminate()
            gw.wait(timeout=20)
    return out


def _settled_size(path: Path) -> int:
    """The journal file's size once its WAL is checkpointed into it (what stays on disk)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


def journal_size(n: int, tmp: Path) -> dict[str, Any]:
    journal = SQLiteJournal(tmp / "journal.db")
    headers = [("Host", "127.0.0.1:8080"), ("User-Agent", "Python/3.11 aiohttp/3.9"), ("Accept", "*/*"),
               ("Content-Type", "application/json"), ("X-User-Id", "user-0001"),
               ("Idempotency-Key", "01938f3e-2a4b-7c1d-9e2f-0a1b2c3d4e5f"), ("X-Forwarded-For", "127.0.0.1"),
               ("X-Forwarded-Proto", "http"), ("X-Forwarded-Host", "127.0.0.1:8080"), ("Via", "1.1 strangler"),
               ("Date", "Sat, 28 Nov 2026 05:00:00 GMT")]
    started = time.perf_counter()
    futures = [journal.append([JournalEntry("likes", "legacy", "legacy", "POST", f"/api/likes/{i % 500 + 1}",
                                           headers, json.dumps({"user": f"user-{i:06d}"}).encode(),
                                           f"01938f3e-2a4b-7c1d-9e2f-{i:012x}", "likes", 200,
                                           entity=f"product_id={i % 500 + 1}")]) for i in range(n)]
    seqs = [seq for f in futures for seq in f.result(60)]
    append_s = time.perf_counter() - started
    pending_bytes = _settled_size(tmp / "journal.db")
    started = time.perf_counter()
    journal._pruned = time.time()      # no prune while delivering (it runs once a minute)
    for at in range(0, len(seqs) - 1, 200):     # the deliverer marks a batch at a time
        journal.delivered([(seq, 200) for seq in seqs[at:min(at + 200, len(seqs) - 1)]])
    deliver_s = time.perf_counter() - started
    journal.retention = 7 * 86400.0
    journal._pruned = 0.0
    journal.delivered([(seqs[-1], 200)])   # a delivery after a minute runs the prune: nothing is old enough yet
    delivered_bytes = _settled_size(tmp / "journal.db")
    journal.retention = 0.0
    journal._pruned = 0.0
    journal.delivered([(seqs[-1], 200)])   # and once the retention has passed, the delivered rows go
    pruned_bytes = _settled_size(tmp / "journal.db")
    commits = journal.commits
    journal.close()
    return {"entries": n, "append_seconds": round(append_s, 2), "commits": commits,
            "mark_delivered_per_second": round(n / deliver_s),
            "pending_mb": round(pending_bytes / 1e6, 1), "delivered_mb": round(delivered_bytes / 1e6, 1),
            "after_retention_mb": round(pruned_bytes / 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="POSTs per route per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rate", type=float, default=300.0, help="POSTs per second of the paced run (0: none)")
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--journal", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="strangler-bench-sync-") as d:
        tmp = Path(d)
        result = asyncio.run(latency_and_throughput(args, tmp))
        (tmp / "j").mkdir()
        result["journal"] = journal_size(args.journal, tmp / "j")
    print(json.dumps(result, indent=2))
    print(f"cpus: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
