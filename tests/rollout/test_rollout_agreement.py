"""Every surface tells the side that actually served: the request path, ``/api/explain``, ``strangler explain``,
``/api/routes`` and ``strangler routes``, through a stepped canary, a rollback and a resume, for 40 sticky users."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support import Backend, admin_url, gateway_with, get, public_url

USERS = [f"user-{i}" for i in range(40)]
ROUTE = """\
    - name: likes
      match: {path: {prefix: /l}}
      to: new
      stage: canary
      canary: {steps: [60, 100], interval: 1h, sticky: {header: X-User-Id}}
    """


async def _served(s: aiohttp.ClientSession, gw: object) -> dict[str, str]:
    out = {}
    for user in USERS:
        status, served_by = await get(s, public_url(gw) + "/l/1", headers={"X-User-Id": user})
        assert status == 200
        out[user] = served_by
    return out


async def _explained(s: aiohttp.ClientSession, gw: object) -> dict[str, dict]:
    out = {}
    for user in USERS:
        query = {"method": "GET", "path": "/l/1", "header": f"X-User-Id: {user}"}
        async with s.get(admin_url(gw) + "/api/explain", params=query) as r:
            assert r.status == 200
            out[user] = await r.json()
    return out


async def _route(s: aiohttp.ClientSession, gw: object) -> dict:
    async with s.get(admin_url(gw) + "/api/routes") as r:
        return next(v for v in await r.json() if v["name"] == "likes")


async def _cli(gw: object, *args: str) -> dict:
    """``strangler ARGS --json`` against the gateway (in a thread: the gateway answers on this event loop)."""
    admin = admin_url(gw).removeprefix("http://")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway", *args, "--admin", admin, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _agree(served: dict[str, str], explained: dict[str, dict]) -> None:
    for user in USERS:
        side = explained[user]["side"]
        assert {"extracted": "new", "legacy": "legacy"}[side] == served[user], user
        # The words name the same backend: "...; this request: new (sticky by ...)" or "legacy (rolled back)".
        assert explained[user]["backend"].split("this request: ")[-1].startswith(served[user])


async def test_explain_routes_and_cli_agree_with_the_side_that_served(tmp_path: Path) -> None:
    async with gateway_with(tmp_path, Backend("legacy"), Backend("new"), ROUTE) as (gw, _path), \
            aiohttp.ClientSession() as s:
        gw.rollout.advance_steps(gw.table.routes)             # the canary starts at its first step: 60%
        served = await _served(s, gw)
        assert 12 <= sum(v == "new" for v in served.values()) <= 36    # about 60% of 40, not the 10% default
        assert served == await _served(s, gw)                  # sticky
        _agree(served, await _explained(s, gw))
        view = await _route(s, gw)
        assert (view["effective_stage"], view["weight"], view["step"]["index"]) == ("canary", 60, 0)
        assert "for 60% of users" in view["serves"]
        cli_routes = {r["name"]: r for r in (await _cli(gw, "routes"))["routes"]}
        assert cli_routes["likes"]["weight"] == 60
        for user in USERS[:8]:
            cli = await _cli(gw, "explain", "GET", "/l/1", "-H", f"X-User-Id: {user}")
            assert {"extracted": "new", "legacy": "legacy"}[cli["side"]] == served[user]

        likes = gw.table.by_name["likes"]
        gw.rollout.rollback(likes, "cli", "agreement test")
        served = await _served(s, gw)
        assert set(served.values()) == {"legacy"}
        _agree(served, await _explained(s, gw))
        view = await _route(s, gw)
        assert (view["effective_stage"], view["weight"]) == ("legacy", None)
        assert (await _cli(gw, "explain", "GET", "/l/1", "-H", "X-User-Id: user-1"))["side"] == "legacy"

        gw.rollout.resume(likes, "cli")
        gw.state.set_step("likes", likes.spec.fingerprint, 1, "cli", "next step")   # as the schedule would
        served = await _served(s, gw)
        assert set(served.values()) == {"new"}
        _agree(served, await _explained(s, gw))
        assert (await _route(s, gw))["weight"] == 100


async def test_explain_without_the_sticky_key_says_it_is_a_random_draw(tmp_path: Path) -> None:
    async with gateway_with(tmp_path, Backend("legacy"), Backend("new"), ROUTE) as (gw, _path), \
            aiohttp.ClientSession() as s:
        async with s.get(admin_url(gw) + "/api/explain", params={"method": "GET", "path": "/l/1"}) as r:
            out = await r.json()
        assert out["side"] is None
        assert "random draw" in out["backend"] and "60% go to new" in out["backend"]
