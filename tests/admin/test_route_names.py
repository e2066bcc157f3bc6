"""A route name that does not exist is an error everywhere a route name is taken: the admin API answers 404 and
lists the real routes, and the CLI says so and exits non-zero (a typo must never read as "nothing recorded")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support import Backend, admin_url, gateway_with

ROUTE = """\
    - name: likes
      match: {path: {prefix: /api/likes}}
      to: new
      stage: shadow
    """


async def test_unknown_route_names_are_404_in_the_api_and_fail_in_the_cli(tmp_path: Path) -> None:
    async with gateway_with(tmp_path, Backend("legacy"), Backend("new"), ROUTE) as (gw, path), \
            aiohttp.ClientSession() as s:
        base = admin_url(gw)
        auth = {"Authorization": f"Bearer {gw.token}"}
        for method, url in (("GET", "/api/diffs?route=nosuchroute"), ("GET", "/api/traces?route=nosuchroute"),
                            ("GET", "/api/history?route=nosuchroute"), ("GET", "/api/report?route=nosuchroute"),
                            ("POST", "/api/routes/nosuchroute/rollback"), ("POST", "/api/routes/nosuchroute/resume"),
                            ("POST", "/api/routes/nosuchroute/replay"), ("POST", "/api/routes/nosuchroute/clear")):
            async with s.request(method, base + url, headers=auth) as resp:
                assert resp.status == 404, (url, resp.status)
                detail = (await resp.json())["detail"]
                assert "no route named 'nosuchroute'" in detail and "likes" in detail, detail
        # The real names still work.
        for url in ("/api/diffs?route=likes", "/api/traces?route=likes", "/api/history?route=likes"):
            async with s.get(base + url) as resp:
                assert resp.status == 200, url

        host, port = gw.bound["admin"]
        for args in (["diffs", "nosuchroute"], ["traces", "--route", "nosuchroute"], ["history", "nosuchroute"],
                     ["report", "--route", "nosuchroute"], ["rollback", "nosuchroute"], ["resume", "nosuchroute"],
                     ["replay", "nosuchroute"], ["diffs", "nosuchroute", "--clear"]):
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "gateway", *args, "-c", str(path), "--admin", f"{host}:{port}"],
                capture_output=True, text=True, timeout=60, env={"STRANGLER_ADMIN_TOKEN": gw.token,
                                                                  **{k: v for k, v in os.environ.items() if k != "STRANGLER_ADMIN_TOKEN"}})
            assert out.returncode != 0, (args, out.stdout)
            assert "no route named 'nosuchroute'" in out.stderr and "likes" in out.stderr, (args, out.stderr)
