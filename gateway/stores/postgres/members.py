"""``Membership`` on the shared store: every instance says every second who it is and what it serves.

The row's ``last_seen`` is the database's clock, and ages are computed by the database too, so instances on
machines whose clocks differ are judged alike. Rows of instances gone for more than ``FORGET_S`` are removed.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from gateway.stores.postgres.link import Link

FORGET_S = 3600


class PgMembership:
    def __init__(self, link: Link, instance: str) -> None:
        self.link = link
        self.instance = instance
        self._info: dict[str, Any] = {}
        self._members: list[dict[str, Any]] = []
        link.add_periodic(self._beat)

    def announce(self, info: dict[str, Any]) -> None:
        """What this instance serves now (address, admin, version, generation, digest, started)."""
        self._info = dict(info)

    def members(self) -> list[dict[str, Any]]:
        """The instances as last read (each with ``age_s``); while the store is away, as they were, and this
        instance as it is now."""
        rows = [dict(m) for m in self._members if m["id"] != self.instance]
        if self._info:
            rows.append({**self._info, "id": self.instance, "age_s": 0.0})
        return sorted(rows, key=lambda m: m["id"])

    def status(self) -> dict[str, Any]:
        return self.link.status()

    def close(self) -> None:
        pass   # the link is closed by the pin store, which owns it

    def _beat(self, cur: psycopg.Cursor[Any]) -> None:
        info = self._info
        if info:
            cur.execute(
                "INSERT INTO instances (id, address, admin, version, generation, digest, started, last_seen, "
                "buffered, dropped) VALUES (%s, %s, %s, %s, %s, %s, %s, now(), %s, %s) ON CONFLICT (id) DO UPDATE "
                "SET address = EXCLUDED.address, admin = EXCLUDED.admin, version = EXCLUDED.version, "
                "generation = EXCLUDED.generation, digest = EXCLUDED.digest, started = EXCLUDED.started, "
                "last_seen = now(), buffered = EXCLUDED.buffered, dropped = EXCLUDED.dropped",
                (self.instance, info.get("address", ""), info.get("admin", ""), info.get("version", ""),
                 info.get("generation", 0), info.get("digest", ""), info.get("started", time.time()),
                 self.link.buffered, self.link.dropped))
        cur.execute("DELETE FROM instances WHERE last_seen < now() - make_interval(secs => %s)", (FORGET_S,))
        cur.execute("SELECT id, address, admin, version, generation, digest, started, "
                    "extract(epoch FROM now() - last_seen)::float8, buffered, dropped FROM instances")
        self._members = [{"id": r[0], "address": r[1], "admin": r[2], "version": r[3], "generation": r[4],
                          "digest": r[5], "started": r[6], "age_s": round(r[7], 3), "buffered": r[8],
                          "dropped": r[9]} for r in cur.fetchall()]
