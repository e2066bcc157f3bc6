"""``PeerExchange`` on the shared store: the guard judges the fleet's traffic, not one instance's share.

Each instance publishes the seconds its statistics windows finished (``stores.workers.Fleet`` collects them) and
reads the other instances' seconds of the last ``KEEP_SECONDS``. The windows count CLOCK_MONOTONIC seconds,
which mean nothing on another machine, so rows carry wall-clock seconds: converted with this process's offset
between the two clocks on the way out, and back on the way in.

Publishing only buffers (the link thread writes); reading returns what the link thread read last, so neither
blocks the caller, and an outage leaves the guard judging on what it last knew plus its own traffic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.stores.postgres.link import Link
from gateway.telemetry.stats import RouteStats

KEEP_SECONDS = 330


@dataclass
class StatsOp:
    instance: str
    rows: list[tuple[Any, ...]]
    keep: bool = False
    done: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.rows = [tuple(row) for row in self.rows]   # from the local copy's JSON: lists

    def apply(self, cur: psycopg.Cursor[Any]) -> bool:
        cur.executemany(
            "INSERT INTO peer_stats VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT "
            "(instance, route, side, second) DO UPDATE SET requests = EXCLUDED.requests, errors = EXCLUDED.errors, "
            "compared = EXCLUDED.compared, mismatches = EXCLUDED.mismatches, hist = EXCLUDED.hist",
            [(self.instance, *row[:-1], Jsonb(json.loads(row[-1]))) for row in self.rows])
        return False


class PgPeers:
    def __init__(self, link: Link, instance: str) -> None:
        self.link = link
        self.instance = instance
        # wall-clock second = monotonic second + offset (both whole seconds, as the windows count them)
        self.offset = round(time.time() - time.monotonic())
        self._peers: dict[str, RouteStats] = {}
        link.add_periodic(self._read)

    def publish(self, rows: list[tuple[object, ...]]) -> None:
        """``rows``: (route, side, monotonic second, requests, errors, compared, mismatches, histogram JSON)."""
        if rows:
            wall = [(r[0], r[1], int(r[2]) + self.offset, *r[3:]) for r in rows]  # type: ignore[call-overload]
            self.link.submit(StatsOp(self.instance, wall))

    def read_peers(self) -> dict[str, RouteStats]:
        return self._peers

    def close(self) -> None:
        pass   # the link is closed by the pin store, which owns it

    def _read(self, cur: psycopg.Cursor[Any]) -> None:
        since = int(time.time()) - KEEP_SECONDS
        # Also the rows of instances gone for good (a restarted instance has a new name).
        cur.execute("DELETE FROM peer_stats WHERE second < %s", (since,))
        cur.execute("SELECT route, side, second, requests, errors, compared, mismatches, hist FROM peer_stats "
                    "WHERE instance <> %s AND second >= %s", (self.instance, since))
        peers: dict[str, RouteStats] = {}
        for route, side, second, requests, errors, compared, mismatches, hist in cur.fetchall():
            stats = peers.get(route)
            if stats is None:
                stats = peers[route] = RouteStats()
            getattr(stats, side).absorb(int(second) - self.offset, requests, errors, compared, mismatches,
                                        {int(k): v for k, v in hist.items()})
        self._peers = peers
