"""Rollout and rollback against real loopback backends: sticky canary, guard, fallback, circuit, limits, steps,
rollback persistence across restarts, history."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.rollout import decision as rollout
from tests.support import (
    Backend,
    admin_url,
    gateway_with,
    get,
    public_url,
    refused_port,
    run_gateway,
    serve_app,
    two_backends,
    write_routes,
)


def guarded_likes(min_requests: int) -> str:
    """A route sending every request to the new side, under a guard that rolls it back above 2% errors."""
    return f"""\
        - name: likes
          match: {{path: {{prefix: /api/likes}}}}
          to: new
          stage: canary
          canary: {{weight: 100}}
          guard: {{window: 30s, min_requests: {min_requests}, max_error_rate: 2%}}
        """


def test_bucket_split_is_sticky_and_monotonic() -> None:
    users = [f"user-{i}" for i in range(10_000)]
    at30 = {u for u in users if rollout.in_share("likes", 30, u)}
    at50 = {u for u in users if rollout.in_share("likes", 50, u)}
    assert 2800 <= len(at30) <= 3200
    assert at30 <= at50                      # raising the weight only moves users to the new side
    assert at30 == {u for u in users if rollout.in_share("likes", 30, u)}   # stable across calls
    other = {u for u in users if rollout.in_share("reviews", 30, u)}
    assert other != at30                     # each route splits independently


async def test_sticky_canary_share_and_no_switching(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: likes
          match: {path: {prefix: /api/likes}}
          to: new
          stage: canary
          canary: {weight: 30, sticky: {header: X-User-Id}}
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        url = public_url(gw) + "/api/likes/1"
        users = [f"u{i}" for i in range(1000)]

        async def sides() -> dict[str, str]:
            out = {}
            for chunk in range(0, len(users), 50):
                batch = users[chunk:chunk + 50]
                got = await asyncio.gather(*(get(s, url, headers={"X-User-Id": u}) for u in batch))
                out.update({u: who for u, (_st, who) in zip(batch, got, strict=True)})
            return out

        first = await sides()
        share = sum(1 for v in first.values() if v == "new") / len(users)
        assert 0.25 <= share <= 0.35, share
        assert await sides() == first           # nobody switches side over repeated requests
        path.write_text(path.read_text().replace("weight: 30", "weight: 50"))
        await gw.reloader.reload("test")
        raised = await sides()
        assert all(raised[u] == "new" for u, side in first.items() if side == "new")
        assert 0.45 <= sum(1 for v in raised.values() if v == "new") / len(users) <= 0.55


async def test_cookie_stickiness_sets_the_cookie_on_both_sides(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: shop
          match: {path: {prefix: /}}
          to: new
          stage: canary
          canary: {weight: 50, sticky: {cookie: canary_id}}
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path):
        seen_sides = set()
        for _ in range(20):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:   # a fresh browser
                status, first = await get(s, public_url(gw) + "/a")
                assert status == 200
                assert any(c.key == "canary_id" for c in s.cookie_jar)
                for _ in range(5):
                    assert (await get(s, public_url(gw) + "/b"))[1] == first
                seen_sides.add(first)
        assert seen_sides == {"legacy", "new"}   # both sides hand out the cookie


async def test_guard_rolls_back_a_failing_new_service(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new", status=500)
    route = guarded_likes(min_requests=20)
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        url = public_url(gw) + "/api/likes/1"
        for _ in range(19):
            assert await get(s, url) == (500, "new")
        assert "likes" not in gw.state.pins             # fewer than min_requests: nothing judged
        assert gw.rollout.guards.state["likes"].state == "inconclusive"
        failed = 19
        while (await get(s, url))[1] == "new":
            failed += 1
            assert failed < 40
        failed += 1
        # The 20th failing request triggers the decision; the next request is already served by legacy.
        assert failed <= 20 + 1, failed
        assert (await get(s, url)) == (200, "legacy")
        async with s.get(admin_url(gw) + "/api/routes") as resp:
            view = next(r for r in await resp.json() if r["name"] == "likes")
        assert view["effective_stage"] == "legacy"
        assert view["rolled_back"]["actor"] == "guard"
        assert "error rate 100.0%" in view["rolled_back"]["reason"]


async def test_fallback_retries_idempotent_requests_only(tmp_path: Path) -> None:
    legacy = Backend("legacy")
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
          on_error: fallback
        """
    async with serve_app(legacy.app()) as lu:
        path = write_routes(tmp_path, two_backends(lu, f"http://127.0.0.1:{refused_port()}", route))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            assert await get(s, public_url(gw) + "/f/1") == (200, "legacy")
            async with s.post(public_url(gw) + "/f/1", data=b"x") as resp:
                # Refused: the new backend never saw it, but a POST is never re-sent anywhere.
                assert resp.status == 502
            assert legacy.hits == 1
            stats = gw.stats.route("feature")
            assert stats.extracted.total_errors >= 2     # the hidden failure still counts for the guard


async def test_fallback_on_503_but_not_for_posts(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new", status=503)
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
          on_error: fallback
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        assert await get(s, public_url(gw) + "/f/1") == (200, "legacy")
        async with s.post(public_url(gw) + "/f/1", data=b"x") as resp:
            assert resp.status == 503 and resp.headers["X-Served-By"] == "new"
        assert new.hits == 2 and legacy.hits == 1


async def test_circuit_opens_and_sends_fallback_routes_to_legacy(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new", status=500)
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
          on_error: fallback
        """
    async with gateway_with(tmp_path, legacy, new, route, ", circuit: {failures: 3, cooldown: 1s}") as (gw, path), aiohttp.ClientSession() as s:
        for _ in range(3):
            assert await get(s, public_url(gw) + "/f") == (500, "new")
        assert gw.protection.circuits["new"].state == "open"
        for _ in range(5):
            assert await get(s, public_url(gw) + "/f") == (200, "legacy")
        assert new.hits == 3
        await asyncio.sleep(1.1)
        new.status = 200
        assert await get(s, public_url(gw) + "/f") == (200, "new")     # the half-open probe
        assert gw.protection.circuits["new"].state == "closed"


async def test_concurrency_limit_answers_503(tmp_path: Path) -> None:
    legacy = Backend("legacy", delay=0.5)
    async with serve_app(legacy.app()) as lu:
        path = write_routes(tmp_path, f"""\
            backends:
              legacy: {{url: "{lu}", max_concurrency: 2, queue: 1}}
            fallback: legacy
            """)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            results = await asyncio.gather(*(get(s, public_url(gw) + f"/{i}") for i in range(6)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 200, 503, 503, 503]


async def test_rollback_survives_restart_and_shows_everywhere(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
        """
    async with serve_app(legacy.app()) as lu, serve_app(new.app()) as nu:
        path = write_routes(tmp_path, two_backends(lu, nu, route))
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            assert (await get(s, public_url(gw) + "/f"))[1] == "new"
            host, port = gw.bound["admin"]
            out = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "gateway", "rollback", "feature", "--reason", "bad totals", "-c", str(path),
                "--admin", f"{host}:{port}"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert (await get(s, public_url(gw) + "/f"))[1] == "legacy"

        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:   # a real restart of the gateway
            assert (await get(s, public_url(gw) + "/f"))[1] == "legacy"
            host, port = gw.bound["admin"]
            routes = json.loads(await asyncio.to_thread(_cli, "routes", "--json", "-c", str(path), "--admin",
                                                        f"{host}:{port}"))
            view = next(r for r in routes["routes"] if r["name"] == "feature")
            assert view["effective_stage"] == "legacy"
            assert view["rolled_back"]["actor"] == "cli" and view["rolled_back"]["reason"] == "bad totals"
            history = json.loads(await asyncio.to_thread(_cli, "history", "feature", "--json", "-c", str(path),
                                                         "--admin", f"{host}:{port}"))
            assert any(h["kind"] == "rollback" and h["actor"] == "cli" and h["reason"] == "bad totals"
                       for h in history)

            # Resume through the admin API (token needed), then an edit of the route clears a new pin.
            async with s.post(admin_url(gw) + "/api/routes/feature/resume") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {gw.token}"}
            async with s.post(admin_url(gw) + "/api/routes/feature/resume", headers=auth) as resp:
                assert resp.status == 200
            assert (await get(s, public_url(gw) + "/f"))[1] == "new"
            async with s.post(admin_url(gw) + "/api/routes/feature/rollback", headers=auth,
                              json={"reason": "again"}) as resp:
                assert resp.status == 200
            path.write_text(path.read_text().replace("stage: extracted", "stage: extracted\n    priority: 1"))
            await gw.reloader.reload("test")
            assert "feature" not in gw.state.pins
            assert (await get(s, public_url(gw) + "/f"))[1] == "new"


def _cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_progressive_steps_hold_while_inconclusive_and_advance_when_healthy(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: likes
          match: {path: {prefix: /l}}
          to: new
          stage: canary
          canary: {steps: [10, 50, 100], interval: 1s}
          guard: {window: 30s, min_requests: 10, max_error_rate: 5%}
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        likes = gw.table.by_name["likes"]
        gw.rollout.advance_steps(gw.table.routes)
        assert gw.rollout.weight(likes) == 10
        gw.rollout.advance_steps(gw.table.routes, now=gw.state.steps["likes"][2] + 2)
        assert gw.rollout.weight(likes) == 10          # no evidence yet: held
        for i in range(200):
            await get(s, public_url(gw) + "/l", headers={"X-Anything": str(i)})
        assert gw.rollout.guards.state["likes"].state == "healthy"
        gw.rollout.advance_steps(gw.table.routes, now=gw.state.steps["likes"][2] + 2)
        assert gw.rollout.weight(likes) == 50
        history = gw.state.history("likes")
        assert any(h["kind"] == "canary_step" and h["detail"]["weight"] == 50 for h in history)


async def test_reverse_shadow_in_extracted_stage(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
          reverse_shadow: true
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        assert (await get(s, public_url(gw) + "/f"))[1] == "new"
        for _ in range(100):
            if legacy.hits:
                break
            await asyncio.sleep(0.02)
        assert legacy.hits == 1                     # the monolith got the copy in the background


async def test_rollback_of_a_legacy_route_is_refused_and_a_second_rollback_keeps_the_first(tmp_path: Path) -> None:
    legacy, new = Backend("legacy"), Backend("new")
    route = """\
        - name: feature
          match: {path: {prefix: /f}}
          to: new
          stage: extracted
        - name: old
          match: {path: {prefix: /o}}
          stage: legacy
        """
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {gw.token}"}
        async with s.post(admin_url(gw) + "/api/routes/old/rollback", headers=auth, json={}) as resp:
            assert resp.status == 409
            assert "stage legacy" in (await resp.json())["detail"]
        for reason in ("first", "second"):
            async with s.post(admin_url(gw) + "/api/routes/feature/rollback", headers=auth,
                              json={"reason": reason}) as resp:
                assert resp.status == 200
        assert gw.state.pins["feature"].reason == "first"
        assert [h["reason"] for h in gw.state.history("feature") if h["kind"] == "rollback"] == ["first"]


async def test_guard_history_records_state_changes_not_every_judgement(tmp_path: Path) -> None:
    """A resume or an edit starts the guard's judgement afresh; history only shows the state when it changes."""
    legacy, new = Backend("legacy"), Backend("new")
    route = guarded_likes(min_requests=50)
    async with gateway_with(tmp_path, legacy, new, route) as (gw, path), aiohttp.ClientSession() as s:
        url = public_url(gw) + "/api/likes/1"
        headers = {"Authorization": f"Bearer {gw.token}"}
        for attempt in range(3):
            assert await get(s, url) == (200, "new")
            await asyncio.sleep(0)       # the guard judges once per loop iteration
            assert gw.rollout.guards.state["likes"].state == "inconclusive"
            async with s.post(admin_url(gw) + "/api/routes/likes/resume", json={}, headers=headers) as resp:
                assert resp.status == 200
            assert "likes" not in gw.rollout.guards.state, attempt      # judged afresh after a resume
        guard_rows = [h for h in gw.state.history("likes") if h["kind"] == "guard"]
        assert len(guard_rows) == 1, guard_rows
        assert guard_rows[0]["reason"].startswith("inconclusive")


async def test_a_decision_that_depends_only_on_the_config_is_made_once_per_generation(tmp_path: Path) -> None:
    from aiohttp.test_utils import make_mocked_request

    legacy, new = Backend("legacy"), Backend("new")
    routes = """\
        - name: shadowed
          match: {path: {prefix: /s}}
          to: new
          stage: shadow
        - name: split
          match: {path: {prefix: /c}}
          to: new
          stage: canary
          canary: {weight: 50}
        """
    request = make_mocked_request("GET", "/s")
    async with gateway_with(tmp_path, legacy, new, routes) as (gw, path):
        shadowed, split = gw.table.by_name["shadowed"], gw.table.by_name["split"]
        first = gw.rollout.decide(shadowed, request)
        assert gw.rollout.decide(shadowed, request) is first
        assert (first.side, first.effective_stage, first.shadow_to) == ("legacy", "shadow", shadowed.to)
        # A rollback is a pin, not a config change: the pinned decision is its own, and resuming gives back the
        # shadow one.
        gw.rollout.rollback(shadowed, "test", "checking")
        pinned = gw.rollout.decide(shadowed, request)
        assert (pinned.side, pinned.effective_stage, pinned.shadow_to) == ("legacy", "legacy", None)
        gw.rollout.resume(shadowed, "test")
        assert gw.rollout.decide(shadowed, request) is first
        # A canary draws per request: nothing is kept.
        sides = {gw.rollout.decide(split, request).side for _ in range(200)}
        assert sides == {"legacy", "extracted"} and split.decisions == {}
        # A reload builds new routes, and their decisions afresh.
        path.write_text(path.read_text().replace("stage: shadow", "stage: extracted"))
        await gw.reloader.reload("test")
        extracted = gw.rollout.decide(gw.table.by_name["shadowed"], request)
        assert (extracted.side, extracted.effective_stage) == ("extracted", "extracted")
        assert gw.rollout.decide(gw.table.by_name["shadowed"], request) is extracted
