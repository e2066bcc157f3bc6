"""A spike of visitors for the demo's waiting room (``strangler demo --burst N``): N visitors arrive at once on
``/api/events``; each keeps its ticket cookie and comes back when ``Retry-After`` says, as a browser on the
waiting page does, until it is let in. Loopback only, bounded: every visitor gives up after ten minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

PATH = "/api/events"
GIVE_UP = 600.0


async def burst(base: str, visitors: int, stop: asyncio.Event) -> tuple[int, int]:
    """Run the spike; returns (let in, gave up)."""
    # Each visitor's cookie is carried by hand: one connection pool, no shared cookie jar.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        results = await asyncio.gather(*(_visitor(session, base + PATH, stop) for _ in range(visitors)))
    return sum(results), visitors - sum(results)


async def _visitor(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> bool:
    cookie: str | None = None
    deadline = time.monotonic() + GIVE_UP
    while not stop.is_set() and time.monotonic() < deadline:
        wait = 1.0
        try:
            async with session.get(url, headers={"Cookie": cookie} if cookie else {}) as resp:
                await resp.read()
                set_cookie = resp.headers.get("Set-Cookie")
                if set_cookie:
                    cookie = set_cookie.split(";", 1)[0]
                if resp.status != 503:
                    return True
                with contextlib.suppress(ValueError):
                    wait = float(resp.headers.get("Retry-After", "1"))
        except (TimeoutError, aiohttp.ClientError):
            pass
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
    return False
