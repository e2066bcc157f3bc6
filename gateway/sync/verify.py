"""Read-after-write verification (``sync.verify``): after a mirrored write reached the other side, read the same
resource from both sides and compare the answers with the compare engine (the route's shadow rules when it has
them, so ignored and tolerant fields behave the same), and record the verdict on the journal entry.

A ``match`` says both sides hold the same data for that entity; a ``mismatch`` is drift the mirroring did not
prevent (two sides took writes to one entity at once, or a service applied the write differently) or a real
difference between the services: the differences say which fields. Bounded: at most ``CONCURRENCY`` checks run,
at most ``QUEUE`` wait; beyond that a check is skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.compare.answers import compare
from gateway.compare.rules import Captured, CompareRules, compile_rules
from gateway.config.model import Backend
from gateway.routing.table import Route, TableRef
from gateway.stores.api import SyncJournal

log = logging.getLogger("strangler.sync")

CONCURRENCY = 4
QUEUE = 256
CAPTURE = 512 * 1024
TIMEOUT = 5.0
_PARAM = re.compile(r"\{([^{}]+)\}")


class Verifier:
    def __init__(self, journal: SyncJournal, tables: TableRef,
                 noise: Callable[[str], frozenset[str]] = lambda _route: frozenset()) -> None:
        self.journal = journal
        self.tables = tables
        self.noise = noise      # the fields the shadow learned are noise on this route (a generated timestamp)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None
        self._rules_cache: dict[str, tuple[str, CompareRules]] = {}
        self.counts: dict[str, dict[str, int]] = {}   # route -> verdict -> n (this process)
        self.skipped = 0

    def check(self, entry: dict[str, Any]) -> None:
        route = self.tables.current.by_name.get(entry["route"])
        if route is None or route.spec is None or route.spec.sync is None or route.spec.sync.verify is None:
            return
        if route.to is None:
            return
        if len(self._tasks) >= CONCURRENCY + QUEUE:
            self.skipped += 1
            return
        task = asyncio.get_running_loop().create_task(self._run(route, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, route: Route, entry: dict[str, Any]) -> None:
        try:
            async with self._slots:
                result = await self._verify(route, entry)
            if result is not None:
                counts = self.counts.setdefault(route.name, {})
                counts[result["verdict"]] = counts.get(result["verdict"], 0) + 1
                await asyncio.to_thread(self.journal.verified, entry["seq"], result)
        except Exception:  # a verification bug must not stop delivery
            log.exception("sync verification failed for route %s", route.name)

    async def _verify(self, route: Route, entry: dict[str, Any]) -> dict[str, Any] | None:
        assert route.spec is not None and route.spec.sync is not None and route.spec.sync.verify is not None
        assert route.to is not None
        verify = route.spec.sync.verify
        params = route.spec.match.path.matches(entry["raw_target"].split("?", 1)[0])
        if params is None:
            return None
        path = _fill(verify.path, params)
        (legacy, lerr), (new, nerr) = await asyncio.gather(self._read(route.legacy, verify.method, path),
                                                           self._read(route.to, verify.method, path))
        if legacy is None or new is None:
            return {"verdict": "error", "path": path, "reason": lerr or nerr, "differences": []}
        result = compare(legacy, new, self._rules(route), self.noise(route.name))
        return {"verdict": result.verdict, "path": path,
                "differences": [{"path": d.path, "field": d.field, "kind": d.kind, "legacy": _short(d.legacy),
                                 "extracted": _short(d.shadow)} for d in result.differences]}

    def _rules(self, route: Route) -> CompareRules:
        """The route's shadow compare rules for the body (headers of two services always differ, and the
        verification is about data), compiled once per version of the route."""
        assert route.spec is not None
        cached = self._rules_cache.get(route.name)
        if cached is not None and cached[0] == route.spec.fingerprint:
            return cached[1]
        c = route.spec.shadow.compare if route.spec.shadow is not None else None
        rules = compile_rules(ignore=[i for i in (c.ignore if c else ()) if not i.startswith("header:")],
                              unordered=list(c.unordered) if c else [], tolerance=c.tolerance if c else 0.0,
                              headers_compare=False)
        self._rules_cache[route.name] = (route.spec.fingerprint, rules)
        return rules

    async def _read(self, backend: Backend, method: str, path: str) -> tuple[Captured | None, str | None]:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=True)
        url = f"{backend.origin}{backend.base_path}{path}"
        try:
            async with self._session.request(method, url, timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
                body = await resp.content.read(CAPTURE)
                headers = tuple((k, v) for k, v in resp.headers.items())
                return Captured(resp.status, headers, body, False), None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return None, f"{backend.name}: {type(exc).__name__}: {exc}"

    async def settle(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def _fill(template: str, params: Any) -> str:
    fill: Callable[[re.Match[str]], str] = lambda m: str(params.get(m.group(1), m.group(0)))  # noqa: E731
    return _PARAM.sub(fill, template)


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 200 else text[:200] + "..."
