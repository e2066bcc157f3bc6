"""Several worker processes on one machine (``strangler up --workers N``) judge routes on their combined traffic.

Every second each worker publishes the seconds its windows finished (counters and latency histograms, per route
and side) to the shared state database, and reads what the other workers published into a *peer* copy of each
window. The guard adds the peer windows to its own (``Window.counts(also=...)``), so a route failing on every
worker is judged on all its requests, not on a per-worker share that may stay below ``min_requests`` forever.
Windows are keyed by CLOCK_MONOTONIC seconds, which every process on the machine shares.

Rollback pins need nothing of this: they live in the state database and every worker re-reads it twice a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path

from gateway.stores import sqlite
from gateway.telemetry.stats import RouteStats, StatsRegistry, Window

log = logging.getLogger("strangler.fleet")

SIDES = ("legacy", "extracted", "shadow")
KEEP_SECONDS = 330

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet (
    worker INTEGER NOT NULL, route TEXT NOT NULL, side TEXT NOT NULL, second INTEGER NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL, compared INTEGER NOT NULL, mismatches INTEGER NOT NULL,
    hist TEXT NOT NULL, PRIMARY KEY (worker, route, side, second)
);
"""


class Fleet:
    def __init__(self, path: Path, worker: int, stats: StatsRegistry) -> None:
        self.worker = worker
        self.stats = stats
        self._db = sqlite.connect(path)
        self._db.executescript(SCHEMA)
        self._published: dict[tuple[str, str], int] = {}
        self.peers: dict[str, RouteStats] = {}

    def close(self) -> None:
        self._db.close()

    def publish(self, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO fleet VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("DELETE FROM fleet WHERE second < ?", (int(time.monotonic()) - KEEP_SECONDS,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def peer_stats(self, route: str) -> RouteStats | None:
        return self.peers.get(route)

    def collect(self) -> list[tuple[object, ...]]:
        """This worker's finished seconds not yet published (runs on the event loop: it reads live windows)."""
        rows: list[tuple[object, ...]] = []
        for name in list(self.stats.names()):
            stats = self.stats.route(name)
            for side in SIDES:
                window: Window = getattr(stats, side)
                after = self._published.get((name, side), -1)
                done = window.completed(after)
                for second, requests, errors, compared, mismatches, hist in done:
                    rows.append((self.worker, name, side, second, requests, errors, compared, mismatches,
                                 json.dumps(hist)))
                if done:
                    self._published[(name, side)] = max(d[0] for d in done)
        return rows

    def read_peers(self) -> dict[str, RouteStats]:
        since = int(time.monotonic()) - KEEP_SECONDS
        peers: dict[str, RouteStats] = {}
        for route, side, second, requests, errors, compared, mismatches, hist in self._db.execute(
                "SELECT route, side, second, requests, errors, compared, mismatches, hist FROM fleet "
                "WHERE worker != ? AND second >= ?", (self.worker, since)):
            stats = peers.get(route)
            if stats is None:
                stats = peers[route] = RouteStats()
            getattr(stats, side).absorb(second, requests, errors, compared, mismatches,
                                        {int(k): v for k, v in json.loads(hist).items()})
        return peers

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                rows = self.collect()
                await asyncio.to_thread(self.publish, rows)
                self.peers = await asyncio.to_thread(self.read_peers)
            except (sqlite3.Error, OSError) as exc:
                log.warning("sharing statistics with the other workers failed: %s", exc)
