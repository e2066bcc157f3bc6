"""Gateway processes judge routes on their combined traffic: the worker processes of one machine
(``strangler up --workers N``) and the instances of a fleet sharing a PostgreSQL store, by one mechanism.

Every second ``Fleet`` collects the seconds this process's windows finished (counters and latency histograms,
per route and side), hands them to a ``PeerExchange``, and takes what the other processes published into a
*peer* copy of each window. The guard adds the peer windows to its own (``Window.counts(also=...)``), so a route
failing everywhere is judged on all its requests, not on a per-process share that may stay below
``min_requests`` forever.

``SqlitePeers`` is the exchange of the worker processes of one machine: a table in the shared state database,
keyed by CLOCK_MONOTONIC seconds, which every process on the machine shares. ``stores.postgres.peers`` is the
fleet's. Rollback pins need nothing of this: they live in the pin store, which every process follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.stores import sqlite
from gateway.stores.api import PeerExchange
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


class SqlitePeers:
    """The worker processes of one machine, through the state database in ``store.dir``."""

    def __init__(self, path: Path, worker: int) -> None:
        self.worker = worker
        self._db = sqlite.connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def publish(self, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO fleet VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(self.worker, *row) for row in rows])
            self._db.execute("DELETE FROM fleet WHERE second < ?", (int(time.monotonic()) - KEEP_SECONDS,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

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


class Fleet:
    """This process's side of the exchange: publish its finished seconds, keep the peers' windows."""

    def __init__(self, exchange: PeerExchange, stats: StatsRegistry,
                 on_peers: Callable[[], None] | None = None) -> None:
        self.exchange = exchange
        self.stats = stats
        # Called after each read: the guards judge the peers' traffic even when this process gets no request.
        self.on_peers = on_peers
        # Per route: the peers' new-side seconds before this one are old evidence (a resume happened since).
        self._cutoff: dict[str, int] = {}
        self._published: dict[tuple[str, str], int] = {}
        self.peers: dict[str, Any] = {}

    def peer_stats(self, route: str) -> RouteStats | None:
        return self.peers.get(route)

    def forget(self, route: str) -> None:
        """The guard judges ``route`` afresh: the other processes' new-side seconds up to now no longer count."""
        self._cutoff[route] = int(time.monotonic()) + 1
        self._apply_cutoffs(self.peers)

    def _apply_cutoffs(self, peers: dict[str, Any]) -> None:
        oldest = int(time.monotonic()) - KEEP_SECONDS
        for route, second in list(self._cutoff.items()):
            if second < oldest:
                del self._cutoff[route]
            elif (stats := peers.get(route)) is not None:
                stats.extracted.forget_before(second)
                stats.shadow.forget_before(second)

    def collect(self, current: bool = False) -> list[tuple[object, ...]]:
        """This process's finished seconds not yet published (runs on the event loop: it reads live windows);
        ``current``: the unfinished second too, when the process stops."""
        rows: list[tuple[object, ...]] = []
        for name in list(self.stats.names()):
            stats = self.stats.route(name)
            for side in SIDES:
                window: Window = getattr(stats, side)
                after = self._published.get((name, side), -1)
                done = window.completed(after, current)
                for second, requests, errors, compared, mismatches, hist in done:
                    rows.append((name, side, second, requests, errors, compared, mismatches, json.dumps(hist)))
                if done:
                    self._published[(name, side)] = max(d[0] for d in done)
        return rows

    async def publish_rest(self) -> None:
        """At a stop: publish what this process counted and has not published yet, the current second too."""
        try:
            await asyncio.to_thread(self.exchange.publish, self.collect(current=True))
        except Exception as exc:  # noqa: BLE001 - stopping must not fail for it
            log.warning("publishing the last statistics failed: %s", exc)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                rows = self.collect()
                await asyncio.to_thread(self.exchange.publish, rows)
                peers = await asyncio.to_thread(self.exchange.read_peers)
                self._apply_cutoffs(peers)
                self.peers = peers
                if self.peers and self.on_peers is not None:
                    self.on_peers()
            except Exception as exc:  # noqa: BLE001 - sharing statistics must never stop; the next second retries
                log.warning("sharing statistics with the other gateway processes failed: %s", exc)
