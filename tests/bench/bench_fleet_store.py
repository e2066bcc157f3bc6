"""Fleet store benchmark: shadow comparisons written into PostgreSQL at a steady rate, against SQLite.

Run: ``python -m tests.bench.bench_fleet_store [--rate 2000] [--seconds 20]``.

A throwaway PostgreSQL cluster is started (as the tests do: ``tests/pg_cluster.py``). For each store (SQLite in a
temporary directory, then PostgreSQL) the comparison store is fed ``--rate`` records a second (shaped like the
demo's reviews comparisons: ``bench_shadow_store._record``), paced in 10 ms ticks as the shadow dispatcher would
hand them over, for ``--seconds``. Every second it samples the records put but not yet committed (the backlog).
The store keeps up when the backlog does not grow: the report gives the backlog's mean over the first and the
last third of the run, its maximum, the records dropped (must be 0), the time ``flush`` needs at the end, and the
CPU the writer took (process CPU over the run, minus the feeding loop's, measured alone first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.stores.diffs import DiffStore
from gateway.stores.postgres.comparisons import PgDiffStore
from gateway.stores.postgres.connect import conninfo
from tests.bench.bench_shadow_store import MAX_SAMPLES, _record
from tests.stores.pg_cluster import PASSWORD, cluster


class _Null:
    """Stands in for a store to measure what feeding alone costs."""

    dropped = 0
    pending = 0

    def put(self, item: Any) -> bool:
        return True

    def noise_sample(self, route: str, fields: frozenset[str]) -> None:
        pass

    def flush(self, timeout: float = 5.0) -> bool:
        return True

    def close(self) -> None:
        pass


def feed(store: Any, rate: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(7)
    records = [_record(i, rng) for i in range(2000)]   # built up front: the run measures the store, not this
    tick = 0.01
    per_tick = rate * tick
    backlog: list[int] = []
    cpu0, started = time.process_time(), time.monotonic()
    sent = 0.0
    put = 0
    next_sample = started + 1.0
    while (now := time.monotonic()) - started < seconds:
        sent += per_tick
        while put < int(sent):
            store.put(records[put % len(records)])
            if put % 10 == 0:
                store.noise_sample("reviews", frozenset({"$.generated_at"}))
            put += 1
        if now >= next_sample:
            backlog.append(store.pending)
            next_sample += 1.0
        time.sleep(max(0.0, started + (put / rate) - time.monotonic()))
    fed = time.monotonic()
    flushed = store.flush(120)
    drained = time.monotonic() - fed
    cpu = time.process_time() - cpu0
    third = max(1, len(backlog) // 3)
    return {"records": put, "rate_per_s": round(put / (fed - started)), "dropped": store.dropped,
            "backlog_first_third": round(statistics.mean(backlog[:third]), 1),
            "backlog_last_third": round(statistics.mean(backlog[-third:]), 1), "backlog_max": max(backlog),
            "flushed": flushed, "drain_s": round(drained, 2), "cpu_s": round(cpu, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    results["feeding alone"] = feed(_Null(), args.rate, min(args.seconds, 5.0))
    base_cpu_per_s = results["feeding alone"]["cpu_s"] / min(args.seconds, 5.0)
    with tempfile.TemporaryDirectory() as tmp:
        store = DiffStore(Path(tmp) / "diffs.db", max_samples=MAX_SAMPLES)
        try:
            results["sqlite"] = feed(store, args.rate, args.seconds)
        finally:
            store.close()
    os.environ["PGPASSWORD"] = PASSWORD
    with cluster() as pg:
        url = pg.create_database("bench")
        store = PgDiffStore(conninfo(url, None), max_samples=MAX_SAMPLES)
        try:
            results["postgresql"] = feed(store, args.rate, args.seconds)
        finally:
            store.close()
    for name in ("sqlite", "postgresql"):
        r = results[name]
        r["writer_cpu_us_per_record"] = round(1e6 * max(0.0, r["cpu_s"] - base_cpu_per_s * args.seconds)
                                              / r["records"], 1)
        r["keeps_up"] = (r["dropped"] == 0 and r["flushed"]
                         and r["backlog_last_third"] <= max(2 * r["backlog_first_third"], args.rate * 0.25))
    print(json.dumps(results, indent=2))
    return 0 if all(results[n]["keeps_up"] for n in ("sqlite", "postgresql")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
