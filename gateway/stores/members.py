"""``Membership`` of a gateway that shares its store with no other machine (SQLite in ``store.dir``): itself."""

from __future__ import annotations

from typing import Any


class LocalMembership:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._info: dict[str, Any] = {}

    def announce(self, info: dict[str, Any]) -> None:
        self._info = dict(info)

    def members(self) -> list[dict[str, Any]]:
        return [{**self._info, "age_s": 0.0}] if self._info else []

    def status(self) -> dict[str, Any]:
        return {"kind": "sqlite", "url": self.directory, "up": True, "since": None, "error": None,
                "buffered": 0, "dropped": 0, "outages": 0}

    def close(self) -> None:
        pass
