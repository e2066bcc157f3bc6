"""Hot reload: watch routes.yaml, validate, swap the whole table atomically, report failures loudly.

The watcher looks at the file's *directory*, because editors and deploy tools replace files by renaming a new one
over the old (and Kubernetes swaps a ``..data`` symlink); any event there triggers a re-read, and the content
digest decides whether anything changed. SIGHUP and ``POST /api/reload`` call the same ``reload``.

A reload builds the new ``Table`` in a thread (a 10,000-route file takes a while to parse) and assigns it to the
``TableRef`` in one statement on the event loop: requests already running keep the table they started with.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.model import Config
from gateway.config.parse import ConfigError, parse
from gateway.routing.table import Table, TableRef

log = logging.getLogger("strangler.reload")


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    ok: bool
    at: float
    generation: int
    error: str | None = None
    changed: bool = False
    actor: str = "file"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": self.at, "error": self.error, "generation": self.generation,
                "changed": self.changed, "actor": self.actor}


def route_changes(old: Config | None, new: Config) -> list[dict[str, Any]]:
    """What changed per route between two generations, in the user's words (for history and logs)."""
    before = {r.name: r for r in old.routes} if old else {}
    after = {r.name: r for r in new.routes}
    changes: list[dict[str, Any]] = []
    for name, r in after.items():
        o = before.get(name)
        if o is None:
            changes.append({"route": name, "change": "added", "stage": r.stage, "to": r.to})
            continue
        if o.fingerprint == r.fingerprint:
            continue
        fields = {}
        for attr in ("stage", "to", "legacy", "priority", "on_error"):
            if getattr(o, attr) != getattr(r, attr):
                fields[attr] = [getattr(o, attr), getattr(r, attr)]
        ow = o.canary.weight if o.canary else None
        nw = r.canary.weight if r.canary else None
        if ow != nw:
            fields["weight"] = [ow, nw]
        # The blocks that changed beyond those fields (a new ignore rule, a guard threshold, the match).
        blocks = [attr for attr in ("match", "shadow", "canary", "guard", "reverse_shadow")
                  if getattr(o, attr) != getattr(r, attr) and not (attr == "canary" and "weight" in fields
                                                                   and _same_but_weight(o, r))]
        changes.append({"route": name, "change": "modified", **({"fields": fields} if fields else {}),
                        **({"blocks": blocks} if blocks else {})})
    for name in before.keys() - after.keys():
        changes.append({"route": name, "change": "removed"})
    return changes


SERVED = "served"   # what ``_build`` answers when the file holds exactly the generation being served

def _same_but_weight(old: Any, new: Any) -> bool:
    return old.canary is not None and new.canary is not None and \
        old.canary.sticky == new.canary.sticky and old.canary.steps == new.canary.steps and \
        old.canary.interval == new.canary.interval


Swapped = Callable[[Table, Table, list[dict[str, Any]], str], None]
Failed = Callable[["ReloadStatus"], None]


class Reloader:
    """``swapped(old, new, changes, actor)`` runs right after a new table is in place; ``failed(status)`` after a
    reload that kept the old one."""

    def __init__(self, path: Path, tables: TableRef, swapped: Swapped, failed: Failed) -> None:
        self.path = path
        self.tables = tables
        self._swapped = swapped
        self._failed = failed
        self.last: ReloadStatus | None = None
        self._failed_digest: str | None = None
        self._lock = asyncio.Lock()

    async def reload(self, actor: str = "file", force: bool = False) -> ReloadStatus:
        async with self._lock:
            return await self._reload(actor, force)

    async def _reload(self, actor: str, force: bool) -> ReloadStatus:
        old = self.tables.current
        try:
            built = await asyncio.to_thread(self._build, old.generation + 1, None if force else old.config.digest,
                                            None if force else self._failed_digest)
        except ConfigError as exc:
            self._failed_digest = getattr(exc, "digest", None)
            status = ReloadStatus(False, time.time(), old.generation, str(exc), actor=actor)
            log.error("config reload failed; still serving generation %d: %s", old.generation, exc,
                      extra={"event": "reload_failed", "generation": old.generation, "errors": exc.problems})
            self.last = status
            self._failed(status)
            return status
        if built is None or built == SERVED:
            if built == SERVED:
                # The file is back to exactly what is served (a bad edit reverted): the file on disk is the
                # truth, so there is no failure left to report.
                recovered = self._failed_digest is not None or (self.last is not None and not self.last.ok)
                self._failed_digest = None
                if recovered:
                    self.last = ReloadStatus(True, time.time(), old.generation, changed=False, actor=actor)
                    log.info("config file is valid again and equals generation %d: nothing to reload",
                             old.generation, extra={"event": "reload_recovered", "generation": old.generation})
            # Same bytes as the running generation, or as the broken file already reported: nothing to do
            # (editors touch files without changing them; the poll must not log the same error every second).
            if self.last is None:
                self.last = ReloadStatus(True, time.time(), old.generation, changed=False, actor=actor)
            if actor != "file":
                # Asked for explicitly (SIGHUP, the admin API): answer with this attempt, not the last change.
                log.info("reload requested by %s: %s", actor, "file unchanged" if self.last.ok else
                         "file still invalid", extra={"event": "reload_unchanged", "actor": actor})
                return ReloadStatus(self.last.ok, time.time(), old.generation, self.last.error, False, actor)
            return self.last
        new_config, table = built
        self._failed_digest = None
        changes = route_changes(old.config, new_config)
        self.tables.current = table
        status = ReloadStatus(True, time.time(), table.generation, changed=True, actor=actor)
        self.last = status
        for warning in new_config.warnings:
            log.warning("%s", warning)
        log.info("config reloaded: generation %d, %d route(s) changed", table.generation, len(changes),
                 extra={"event": "reloaded", "generation": table.generation, "changes": changes})
        self._swapped(old, table, changes, actor)
        return status

    def _build(self, generation: int, current_digest: str | None,
               failed_digest: str | None) -> tuple[Config, Table] | str | None:
        """The new generation; ``SERVED`` when the file equals the served one; None when it is the broken file
        already reported."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError([f"{self.path}: cannot read: {exc.strerror or exc}"]) from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest == current_digest:
            return SERVED
        if digest == failed_digest:
            return None
        try:
            cfg = parse(raw, self.path)
        except ConfigError as exc:
            exc.digest = digest  # type: ignore[attr-defined]
            raise
        return cfg, Table(cfg, generation)

    async def watch(self, poll_interval: float = 1.0) -> None:
        """Reload whenever something happens in the config's directory (until cancelled).

        A slow poll of the file's digest runs beside the directory watch: it catches an edit made before the
        watch was in place, and file systems where change notifications do not arrive (some network mounts)."""
        poller = asyncio.ensure_future(self._poll(poll_interval))
        try:
            await self._watch_directory()
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    async def _watch_directory(self) -> None:
        directory = self.path.absolute().parent
        try:
            from watchfiles import awatch
        except ImportError:  # pragma: no cover - watchfiles is a dependency; the poll keeps working without it
            await asyncio.Event().wait()
            return
        logging.getLogger("watchfiles").setLevel(logging.WARNING)   # it logs every batch of events at info
        async for _changes in awatch(directory, debounce=50, step=25, recursive=False,
                                     watch_filter=self._concerns_config):
            await self.reload("file")

    def _concerns_config(self, _change: object, changed: str) -> bool:
        """Only direct children of the config's directory count: the file itself, a file renamed over it, or a
        swapped symlink (``..data`` in Kubernetes). The store directory beside it changes all the time."""
        path = Path(changed)
        directory = self.path.absolute().parent
        if path.parent != directory:
            return False
        store = self.tables.current.config.store.dir
        return path != store and not path.name.endswith(("-journal", "-wal", "-shm", ".db"))

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reload("file")
