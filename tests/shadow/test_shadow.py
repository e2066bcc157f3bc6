"""The shadow stage through a real gateway on loopback: what is copied (sampling, methods, body cap, marker,
Host), what the client sees when the shadow target misbehaves (exactly what it sees without a shadow), the bounded
queue, verdicts and differences recorded with secrets redacted, noise learning, and replay."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.shadow.services import (
    FakeService,
    admin_json,
    raw_server,
    refused_url,
    report_for,
    routes_yaml,
    serve_cancelling,
)
from tests.support import public_url, run_gateway

ITEMS = """\
- name: items
  match: {path: {prefix: /items}}
  to: new
  stage: shadow
  shadow: {percent: 100, timeout: 500ms}
"""


async def _get(s: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    async with s.get(url, **kw) as r:
        return r.status, [(k, v) for k, v in r.headers.items()], await r.read()


async def test_copy_carries_the_marker_and_the_clients_host_and_clients_cannot_forge_the_marker(
        tmp_path: Path) -> None:
    legacy, new = FakeService("legacy"), FakeService("new")
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, ITEMS)) as gw, aiohttp.ClientSession() as s:
            status, _, _ = await _get(s, public_url(gw) + "/items/7?x=1", headers={"Host": "shop.example",
                                                                             "X-Shadow": "1"})
            assert status == 200
            await gw.shadow.settle()
    (primary,) = legacy.seen
    assert "X-Shadow" not in primary.headers  # stripped from the client's request
    (copy,) = new.seen
    assert copy.path == "/items/7?x=1"
    assert [v for k, v in copy.raw_headers if k.lower() == "x-shadow"] == ["1"]
    assert copy.headers["Host"] == "shop.example"
    assert primary.headers["Host"] == "shop.example"


async def test_unsafe_methods_are_copied_only_when_listed(tmp_path: Path) -> None:
    routes = ITEMS + """\
- name: orders
  match: {path: {prefix: /orders}}
  to: new
  stage: shadow
  shadow: {methods: [GET, POST]}
"""
    legacy, new = FakeService("legacy"), FakeService("new")
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, routes)) as gw, aiohttp.ClientSession() as s:
            async with s.post(public_url(gw) + "/items/1", data=b"not copied") as r:
                assert r.status == 200
            async with s.get(public_url(gw) + "/items/1") as r:
                assert r.status == 200
            async with s.post(public_url(gw) + "/orders", data=b'{"sku": 1}') as r:
                assert r.status == 200
            await gw.shadow.settle()
            items = await report_for(gw, "items")
    assert [(c.method, c.path, c.body) for c in new.seen] == [("GET", "/items/1", b""),
                                                              ("POST", "/orders", b'{"sku": 1}')]
    assert items["skipped_live"] == {"method": 1}
    assert [(c.method, c.path) for c in legacy.seen] == [("POST", "/items/1"), ("GET", "/items/1"),
                                                         ("POST", "/orders")]


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def test_a_2mib_post_reaches_the_primary_intact_and_is_skipped_as_too_large(tmp_path: Path) -> None:
    routes = """\
- name: upload
  match: {path: {prefix: /upload}}
  to: new
  stage: shadow
  shadow: {methods: [POST], max_body: 1MiB}
"""
    big = os.urandom(2 * 1024 * 1024)
    small = os.urandom(512 * 1024)
    legacy, new = FakeService("legacy"), FakeService("new")
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, routes)) as gw, aiohttp.ClientSession() as s:
            answers = []
            for data in (big, _chunks(big), _chunks(small)):  # with Content-Length, then chunked twice
                async with s.post(public_url(gw) + "/upload", data=data) as r:
                    assert r.status == 200
                    answers.append(await r.json())
            await gw.shadow.settle()
            report = await report_for(gw, "upload")
    sha = hashlib.sha256
    assert [a["sha256"] for a in answers] == [sha(big).hexdigest(), sha(big).hexdigest(), sha(small).hexdigest()]
    assert [sha(x.body).hexdigest() for x in legacy.seen] == [a["sha256"] for a in answers]
    (copy,) = new.seen  # only the body under the cap was copied, whole
    assert copy.body == small
    assert report["skipped"] == {"body_too_large": 2}
    assert report["verdicts"] == {"match": 1}


async def test_sampling_is_sticky_by_key(tmp_path: Path) -> None:
    routes = """\
- name: items
  match: {path: {prefix: /items}}
  to: new
  stage: shadow
  shadow: {percent: 30, key: {header: X-User}}
"""
    legacy, new = FakeService("legacy"), FakeService("new")
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, routes)) as gw, aiohttp.ClientSession() as s:
            for _ in range(3):
                for user in range(100):
                    async with s.get(public_url(gw) + "/items/1", headers={"X-User": f"user-{user}"}) as r:
                        assert r.status == 200
            await gw.shadow.settle()
            report = await report_for(gw, "items")
    per_user: dict[str, int] = {}
    for c in new.seen:
        per_user[c.headers["X-User"]] = per_user.get(c.headers["X-User"], 0) + 1
    assert set(per_user.values()) == {3}  # a user is copied every time or never
    assert 15 <= len(per_user) <= 45
    assert report["skipped_live"]["sampled_out"] == 3 * (100 - len(per_user))


async def _item(request: web.Request, body: bytes) -> web.StreamResponse:
    item = request.path.rsplit("/", 1)[-1]
    resp = web.Response(body=json.dumps({"item": item, "price": 4.33}).encode(), content_type="application/json",
                        headers={"X-Served-By": "legacy", "ETag": f'"{item}"', "Cache-Control": "max-age=60"})
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/")
    return resp


def _deterministic_legacy() -> FakeService:
    return FakeService("legacy", _item)


def _slow_or_failing(kind: str) -> FakeService:
    async def respond(request: web.Request, body: bytes) -> web.StreamResponse:
        if kind == "slow":
            await asyncio.sleep(0.2)
            return await _item(request, body)
        return web.json_response({"error": "boom"}, status=500)

    return FakeService("new", respond)


@pytest.mark.parametrize("kind", ["hang", "refuse", "reset", "garbage", "slow", "error500"])
async def test_a_misbehaving_shadow_target_changes_nothing_for_the_client(tmp_path: Path, kind: str) -> None:
    """Each request is sent twice: on a route without shadow and on one shadowed to the bad target. The client
    must get the same status, headers (but Date and the trace id) and body from both."""
    routes = ITEMS.replace("/items", "/copied") + """\
- name: plain
  match: {path: {prefix: /plain}}
  stage: legacy
"""
    legacy = _deterministic_legacy()
    async with serve_cancelling(legacy.app) as lu, _target(kind) as (nu, accepted):
        async with run_gateway(routes_yaml(tmp_path, lu, nu, routes)) as gw, aiohttp.ClientSession(
                auto_decompress=False) as s:
            for i in range(5):
                plain = await _get(s, f"{public_url(gw)}/plain/{i}")
                copied = await _get(s, f"{public_url(gw)}/copied/{i}")
                assert plain[0] == copied[0] == 200
                assert _without_date(plain[1]) == _without_date(copied[1])
                assert plain[2] == copied[2] == json.dumps({"item": str(i), "price": 4.33}).encode()
            await gw.shadow.settle()
            report = await report_for(gw, "items")
            diffs = await admin_json(gw, "GET", "/api/diffs?route=items")
    expected = "match" if kind == "slow" else "error"
    assert report["verdicts"] == {expected: 5}
    assert {d["verdict"] for d in diffs} == {expected}
    if kind == "hang":
        assert all("timeout" in d["reason"] for d in diffs)
        assert accepted[0] >= 1
    if kind == "error500":
        assert all(d["reason"] == "shadow answered 500" for d in diffs)


def _without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Date and the per-request trace id differ between any two answers, shadowed or not."""
    return [(k, v) for k, v in headers if k.lower() not in ("date", "x-trace-id")]


class _target:
    """The shadow target of one misbehaviour, as an async context manager yielding (url, accepted counter)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._cm: Any = None

    async def __aenter__(self) -> tuple[str, list[int]]:
        if self.kind in ("hang", "reset", "garbage"):
            self._cm = raw_server(self.kind)
            return await self._cm.__aenter__()
        if self.kind == "refuse":
            return refused_url(), [0]
        self._cm = serve_cancelling(_slow_or_failing(self.kind).app)
        return await self._cm.__aenter__(), [0]

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)


async def test_copies_are_bounded_and_the_overflow_is_counted_as_queue_full(tmp_path: Path) -> None:
    legacy = FakeService("legacy")
    async with serve_cancelling(legacy.app) as lu, raw_server("hang") as (nu, accepted):
        async with run_gateway(routes_yaml(tmp_path, lu, nu, ITEMS)) as gw, aiohttp.ClientSession() as s:
            gw.shadow.set_limits(concurrency=2, pending=4)
            for i in range(10):
                async with s.get(f"{public_url(gw)}/items/{i}") as r:
                    assert r.status == 200
            assert gw.shadow.depth == 4  # two exchanges hanging, two waiting for a slot
            await asyncio.sleep(0.1)
            assert accepted[0] == 2
            await gw.shadow.settle()
            report = await report_for(gw, "items")
    assert len(legacy.seen) == 10
    assert report["skipped"] == {"queue_full": 6}
    assert report["verdicts"] == {"error": 4}
    assert accepted[0] == 4


def _gzip_json(doc: dict[str, Any], name: str) -> web.Response:
    resp = web.Response(body=gzip.compress(json.dumps(doc).encode()), content_type="application/json",
                        headers={"Content-Encoding": "gzip", "X-Served-By": name})
    resp.headers.add("Set-Cookie", "session=secret-session-value; Path=/")
    return resp


async def test_mismatch_recorded_on_compressed_bodies_with_secrets_redacted(tmp_path: Path) -> None:
    async def legacy_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return _gzip_json({"product": 3, "average": 4.33, "tags": ["a", "b"]}, "legacy")

    async def new_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return _gzip_json({"product": 3, "average": 4.3, "tags": ["a", "b"]}, "new")

    legacy, new = FakeService("legacy", legacy_answer), FakeService("new", new_answer)
    secrets = {"Authorization": "Bearer secret-token-value", "Cookie": "session=secret-cookie-value"}
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, ITEMS)) as gw, aiohttp.ClientSession(
                auto_decompress=False) as s:
            status, headers, body = await _get(s, public_url(gw) + "/items/3", headers=secrets)
            await gw.shadow.settle()
            (row,) = await admin_json(gw, "GET", "/api/diffs?route=items")
            detail = await admin_json(gw, "GET", f"/api/diffs/{row['id']}")
            report = await report_for(gw, "items")
    assert status == 200 and dict(headers)["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == json.dumps({"product": 3, "average": 4.33, "tags": ["a", "b"]}).encode()
    assert new.seen[0].headers["Authorization"] == secrets["Authorization"]  # the copy itself is faithful
    assert row["verdict"] == "mismatch"
    assert [(d["path"], d["legacy"], d["shadow"]) for d in row["differences"]] == [("$.average", 4.33, 4.3)]
    assert row["primary"]["status"] == 200 and row["shadow"]["status"] == 200
    assert row["primary"]["ms"] is not None and row["shadow"]["ms"] is not None
    assert report["fields"][0]["field"] == "$.average" and report["fields"][0]["last_sample"] == row["id"]
    assert report["compared_latency"]["legacy"]["requests"] == 1
    request_headers = dict(detail["request"]["headers"])
    assert request_headers["Authorization"] == request_headers["Cookie"] == "[redacted]"
    assert dict(detail["primary"]["headers"])["Set-Cookie"] == "[redacted]"
    assert dict(detail["shadow"]["headers"])["Set-Cookie"] == "[redacted]"
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").glob("diffs.db*"))
    assert b"secret-" not in stored
    assert b"average" in stored or b"\x1f\x8b" in stored  # the samples are there, only the secrets are not


async def test_noise_learning_turns_a_generated_field_into_learned_noise(tmp_path: Path) -> None:
    routes = ITEMS.replace("timeout: 500ms}", "timeout: 500ms, compare: {noise: 10%}}")

    async def legacy_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"value": 1, "generated_at": time.time_ns()})

    async def new_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        value = 2 if "bad" in request.query else 1
        return web.json_response({"value": value, "generated_at": time.time_ns()})

    legacy, new = FakeService("legacy", legacy_answer), FakeService("new", new_answer)
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        path = routes_yaml(tmp_path, lu, nu, routes)
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            for i in range(6):
                async with s.get(f"{public_url(gw)}/items/{i}") as r:
                    assert r.status == 200
                await gw.shadow.settle()
            async with s.get(f"{public_url(gw)}/items/9?bad=1") as r:
                assert r.status == 200
            await gw.shadow.settle()
            report = await report_for(gw, "items")
        # The learned noise survives a restart: the first comparison of the next run already ignores it.
        async with run_gateway(path) as gw, aiohttp.ClientSession() as s:
            async with s.get(f"{public_url(gw)}/items/1") as r:
                assert r.status == 200
            await gw.shadow.settle()
            (latest, *_) = await admin_json(gw, "GET", "/api/diffs?route=items")
    # The first request alone is not proof of noise (one disagreement could be a write between the reads).
    assert report["verdicts"] == {"mismatch": 2, "ignored": 5}
    assert report["noise"] == [{"field": "$.generated_at", "differed": 7, "rate": 100.0, "learned": True}]
    assert report["noise_samples"] == 7
    # The second reads carried the marker (dry run): seven in the first run, one in the second (a run
    # double-checks all of its first requests).
    assert len(legacy.shadowed()) == 8
    value = next(f for f in report["fields"] if f["field"] == "$.value")
    assert value["count"] == 1
    assert latest["verdict"] == "ignored"


async def test_replay_compares_recorded_legacy_answers_with_the_fixed_service(tmp_path: Path) -> None:
    fixed = {"on": False}

    async def legacy_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"average": 4.33, "id": request.path})

    async def new_answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"average": 4.33 if fixed["on"] else 4.3, "id": request.path})

    legacy, new = FakeService("legacy", legacy_answer), FakeService("new", new_answer)
    async with serve_cancelling(legacy.app) as lu, serve_cancelling(new.app) as nu:
        async with run_gateway(routes_yaml(tmp_path, lu, nu, ITEMS)) as gw, aiohttp.ClientSession() as s:
            for i in range(3):
                async with s.post(f"{public_url(gw)}/items/{i}"):  # not shadowed: POST is not listed
                    pass
                async with s.get(f"{public_url(gw)}/items/{i}") as r:
                    assert r.status == 200
            await gw.shadow.settle()
            fixed["on"] = True
            legacy_calls = len(legacy.seen)
            result = await admin_json(gw, "POST", "/api/routes/items/replay?limit=10")
            await gw.shadow.settle()
            report = await report_for(gw, "items")
    assert legacy_calls == len(legacy.seen)  # replay compares with what legacy answered then
    assert result["replayed"] == 3
    assert result["verdicts"] == {"match": 3}
    assert {r["was"] for r in result["results"]} == {"mismatch"}
    assert [c.path for c in new.seen[-3:]] == ["/items/2", "/items/1", "/items/0"]
    assert all(c.headers["X-Shadow"] == "1" for c in new.seen)
    assert report["verdicts"] == {"mismatch": 3}  # replays are kept apart from live verdicts


def _body(doc: Any) -> dict[str, Any]:
    text = json.dumps(doc)
    return {"text": text, "size": len(text)}


def test_diff_rendering_is_side_by_side_with_the_differing_fields_marked() -> None:
    from rich.console import Console

    from gateway.cli.render import print_diff

    legacy = {"average": 4.33, "generated_at": "12:00:01", "items": [{"id": i, "text": "ok"} for i in range(20)]}
    new = {**legacy, "average": 4.3, "generated_at": "12:00:02", "items": legacy["items"][:-1]}
    d = {"id": 42, "route": "reviews", "method": "GET", "path": "/api/products/3/reviews", "verdict": "mismatch",
         "reason": "", "trace_id": None,
         "primary": {"backend": "legacy", "status": 200, "ms": 2.5, "body": _body(legacy), "truncated": False},
         "shadow": {"backend": "reviews", "status": 200, "ms": 3.1, "body": _body(new), "truncated": False},
         "differences": [{"path": "$.average", "field": "$.average", "kind": "changed", "legacy": 4.33,
                          "shadow": 4.3},
                         {"path": "$.items[19]", "field": "$.items[*]", "kind": "missing", "legacy": {"id": 19},
                          "shadow": None}],
         "ignored": [{"path": "$.generated_at", "field": "$.generated_at", "kind": "changed", "legacy": "12:00:01",
                      "shadow": "12:00:02"}]}
    con = Console(width=100, record=True, color_system="truecolor", force_terminal=True)
    print_diff(con, d)
    lines = con.export_text(clear=False).splitlines()
    average = next(line for line in lines if '"average": 4.33' in line)
    assert average.lstrip().startswith("!") and '"average": 4.3,' in average.split("4.33", 1)[1]
    noise = next(line for line in lines if '"generated_at": "12:00:01"' in line)
    assert noise.lstrip().startswith("~") and "12:00:02" in noise
    # The element only legacy has sits beside blank lines, and the long equal middle is folded away.
    assert any(line.lstrip().startswith("!") and '"id": 19' in line for line in lines)
    assert any("equal line(s)" in line for line in lines)
    assert len(lines) < 60
    # The counted difference is coloured (red on the legacy side), the noise line is not.
    styled = con.export_text(styles=True)
    average_styled = next(line for line in styled.splitlines() if '"average": 4.33' in line)
    noise_styled = next(line for line in styled.splitlines() if '"generated_at": "12:00:01"' in line)
    assert "\x1b[" in average_styled and "48;" in average_styled  # a background colour
    assert "48;" not in noise_styled


async def test_a_target_that_keeps_failing_is_left_alone_and_probed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.shadow import dispatcher as shadow

    monkeypatch.setattr(shadow, "COOLDOWN", 0.3)
    legacy = FakeService("legacy")
    async with serve_cancelling(legacy.app) as lu:
        async with run_gateway(routes_yaml(tmp_path, lu, refused_url(), ITEMS)) as gw, aiohttp.ClientSession() as s:
            for i in range(12):
                async with s.get(f"{public_url(gw)}/items/{i}") as r:
                    assert r.status == 200
                await gw.shadow.settle()
            before_probe = await report_for(gw, "items")
            await asyncio.sleep(0.35)
            for i in range(3):
                async with s.get(f"{public_url(gw)}/items/{i}") as r:
                    assert r.status == 200
                await gw.shadow.settle()
            after_probe = await report_for(gw, "items")
    assert before_probe["verdicts"] == {"error": shadow.TRIP_AFTER}
    assert before_probe["skipped"] == {"target_down": 12 - shadow.TRIP_AFTER}
    assert after_probe["verdicts"] == {"error": shadow.TRIP_AFTER + 1}  # one probe, failed again
    assert after_probe["skipped"] == {"target_down": 12 - shadow.TRIP_AFTER + 2}
    assert len(legacy.seen) == 15


async def test_pacer_spreads_a_burst_of_copies_over_loop_iterations() -> None:
    """Copies that come back together take their turn a few per loop iteration, so the primary side's I/O gets
    handled in between instead of waiting behind the whole burst."""
    from gateway.shadow.dispatcher import Pacer

    pacer = Pacer(4)
    iteration = 0
    running = True

    def tick() -> None:   # counts loop iterations: each run of the callback is one iteration later
        nonlocal iteration
        iteration += 1
        if running:
            asyncio.get_running_loop().call_soon(tick)

    turns: list[int] = []

    async def copy() -> None:
        await pacer.turn()
        turns.append(iteration)

    asyncio.get_running_loop().call_soon(tick)
    await asyncio.gather(*(copy() for _ in range(20)))
    running = False
    per_iteration = {i: turns.count(i) for i in set(turns)}
    assert len(turns) == 20
    assert max(per_iteration.values()) <= 4, per_iteration
    assert len(per_iteration) >= 5, per_iteration
