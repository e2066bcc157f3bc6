"""Waiting rooms: the line (pure), the tickets (pure), the config, and real gateways in front of real loopback
backends: a spike let in at the rate in arrival order, tickets that are worth nothing, a restart that keeps the
line and the sessions, a reload that retunes without losing a place, and what the admin surfaces show."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.admission.tickets import ADMITTED, WAITING, Refused, Signer, Ticket, cookie_name, cookie_value
from gateway.config.parse import ConfigError, load
from gateway.stores.admission import SigningKey, SqliteAdmissionQueue
from gateway.stores.waiting_line import LET_IN, LOST, Line
from tests.support import (
    admin_url,
    free_port,
    process,
    public_url,
    run_gateway,
    serve_app,
    wait_http,
    write_routes,
)

# -- the line, as a pure function of time ------------------------------------------------------------------------


def test_line_admits_first_come_first_served_at_the_rate() -> None:
    line = Line(rate=10.0, capacity=1.0, limit=1000, grace=60.0, now=0.0)
    assert line.enter(0.0)                    # nobody waits and a token is free: straight in
    assert not line.enter(0.0)                # the token is spent
    places = [line.join(0.0) for _ in range(30)]
    assert [p[1] for p in places if p] == list(range(1, 31))
    called: list[int] = []
    last_position = {n: pos for n, pos in (p for p in places if p)}
    for step in range(1, 41):                 # every visitor polls every 0.1 s for 4 s
        now = step * 0.1
        for number, _ in (p for p in places if p):
            if number in called:
                continue
            answer = line.poll(number, now)
            if answer == LET_IN:
                called.append(number)
            else:
                assert 0 < answer <= last_position[number]   # positions only go down
                last_position[number] = answer
    assert called == sorted(called)           # let in in arrival order
    assert len(called) == 30                  # 10/s for 3 s (and then some): everyone is in


def test_line_full_and_visitors_who_stop_polling_lose_their_place() -> None:
    line = Line(rate=1.0, capacity=1.0, limit=3, grace=5.0, now=0.0)
    line.tokens = 0.0
    a, b, c = (line.join(0.0) for _ in range(3))
    assert a and b and c and line.join(0.0) is None           # the fourth: full
    assert line.poll(c[0], 0.5) == 3
    assert line.poll(c[0], 1.5) == 2                          # a was called at t=1
    assert line.poll(b[0], 1.8) == 1
    line.advance(7.0)                                         # b and c are called at t=7
    assert line.sweep(7.0) == 1                               # ...and never came back within the grace
    assert line.poll(a[0], 7.0) == LOST
    assert line.poll(c[0], 7.0) == LET_IN
    silent = Line(rate=1.0, capacity=1.0, limit=3, grace=5.0, now=0.0, paused=True)
    d, e = silent.join(0.0), silent.join(0.0)
    assert d and e and silent.poll(e[0], 4.0) == 2
    assert silent.sweep(6.0) == 1                             # d stopped polling: its place is gone
    assert silent.poll(d[0], 6.0) == LOST and silent.poll(e[0], 6.0) == 1


def test_sweep_reads_only_the_silent_and_positions_close_up() -> None:
    line = Line(rate=1.0, capacity=1.0, limit=1000, grace=5.0, now=0.0, paused=True)
    numbers = [line.join(0.0)[0] for _ in range(100)]  # type: ignore[index]
    keep = numbers[::10]                                      # every tenth keeps polling
    for n in keep:
        line.poll(n, 4.0)
    assert line.sweep(6.0) == 90                              # the other 90 went silent
    assert [line.poll(n, 6.0) for n in keep] == list(range(1, 11))
    for n in keep[:3]:
        line.poll(n, 9.0)
    assert line.sweep(11.5) == 7                              # a few (the small-removal path)
    assert [line.poll(n, 11.5) for n in keep[:3]] == [1, 2, 3]
    assert line.waiting == 3


def test_line_keeps_places_when_retuned_and_restored() -> None:
    line = Line(rate=1.0, capacity=1.0, limit=100, grace=60.0, now=0.0)
    line.tokens = 0.0
    numbers = [line.join(0.0)[0] for _ in range(10)]  # type: ignore[index]
    line.configure(rate=100.0, capacity=10.0, limit=100, grace=60.0, paused=False, now=0.5)
    assert line.poll(numbers[-1], 0.5) == 10                  # the retune kept every place
    restored = Line(rate=1.0, capacity=1.0, limit=100, grace=60.0, now=0.0)
    restored.restore([(n, "w") for n in numbers[3:]] + [(numbers[0], "c")], now=0.0)
    assert restored.poll(numbers[3], 0.0) == 1 and restored.poll(numbers[-1], 0.0) == 7
    assert restored.poll(numbers[0], 0.0) == LET_IN          # called before the restart: still let in
    assert restored.join(0.0) == (numbers[-1] + 1, 8)         # new numbers continue after the old ones


def test_paused_line_lets_nobody_in() -> None:
    line = Line(rate=100.0, capacity=1.0, limit=100, grace=60.0, now=0.0, paused=True)
    n, _ = line.join(0.0)  # type: ignore[misc]
    assert line.poll(n, 10.0) == 1 and line.eta(1) == float("inf")


# -- tickets ------------------------------------------------------------------------------------------------------


def test_ticket_signature_route_line_expiry_and_key_rotation() -> None:
    keys = [[SigningKey(1, b"k" * 32, 0.0, None)]]
    signer = Signer(lambda: keys[0])
    t = Ticket(ADMITTED, "events", "e1", 7, 100, 1000)
    value = signer.sign(t)
    assert signer.verify(value, "events", ("e1", "e1.0"), 500.0, 60.0) == t
    tampered = value.replace(":7:", ":1:")
    for bad, why in ((tampered, "bad signature"), (value[:-2] + "xx", "bad signature"), ("junk", "malformed")):
        with pytest.raises(Refused, match=why):
            signer.verify(bad, "events", ("e1", "e1.0"), 500.0, 60.0)
    with pytest.raises(Refused, match="expired"):
        signer.verify(value, "events", ("e1", "e1.0"), 1001.0, 60.0)
    with pytest.raises(Refused, match="issued for route 'events'"):
        signer.verify(value, "gifts", ("e1", "e1.0"), 500.0, 60.0)
    with pytest.raises(Refused, match="earlier line"):
        signer.verify(value, "events", ("e2", "e2.0"), 500.0, 60.0)
    # Rotation: the new key signs, the old one verifies for the grace, then no more.
    keys[0] = [SigningKey(2, b"n" * 32, 600.0, None), SigningKey(1, b"k" * 32, 0.0, 600.0)]
    assert signer.verify(value, "events", ("e1", "e1.0"), 650.0, 60.0) == t
    assert signer.sign(Ticket(WAITING, "events", "e1", 1, 1, 999)).split(":")[7] == "2"
    with pytest.raises(Refused, match="no longer accepted"):
        signer.verify(value, "events", ("e1", "e1.0"), 661.0, 60.0)


def test_cookie_value_finds_exactly_the_named_cookie() -> None:
    header = 'xstrangler-room-a=no; strangler-room-ab=no; strangler-room-a="1:w:a"; z=2'
    assert cookie_value(header, "strangler-room-a") == "1:w:a"
    assert cookie_value("strangler-room-a=v", "strangler-room-a") == "v"
    assert cookie_value("a=1;strangler-room-a=v2", "strangler-room-a") == "v2"
    assert cookie_value("strangler-room-ab=1", "strangler-room-a") is None


def test_workers_share_the_room_but_not_the_numbers(tmp_path: Path) -> None:
    one, two = SqliteAdmissionQueue(tmp_path / "a.db", 0), SqliteAdmissionQueue(tmp_path / "a.db", 1)
    for q in (one, two):
        q.configure("events", 1.0, 1.0, 100, 60.0, False)
    assert one.epoch("events") == two.epoch("events") and one.line_id("events") != two.line_id("events")
    signer = Signer(one.keys)
    admitted = signer.sign(Ticket(ADMITTED, "events", one.epoch("events"), 0, 1, 2_000_000_000))
    waiting = signer.sign(Ticket(WAITING, "events", one.line_id("events"), 5, 1, 2_000_000_000))
    theirs = (two.epoch("events"), two.line_id("events"))
    assert signer.verify(admitted, "events", theirs, 10.0, 60.0).kind == ADMITTED   # a session passes anywhere
    with pytest.raises(Refused, match="another worker"):                           # a number is one line's
        signer.verify(waiting, "events", theirs, 10.0, 60.0)
    one.close()
    two.close()


def test_store_keeps_keys_and_rotates(tmp_path: Path) -> None:
    store = SqliteAdmissionQueue(tmp_path / "admission.db")
    first = store.keys()[0]
    store.close()
    again = SqliteAdmissionQueue(tmp_path / "admission.db")
    assert again.keys()[0].secret == first.secret             # generated once, kept in the store
    new = again.rotate_key()
    assert new.kid != first.kid and again.keys()[1].retired is not None
    again.close()


# -- config -------------------------------------------------------------------------------------------------------


def test_admission_config_defaults_units_and_errors(tmp_path: Path) -> None:
    path = write_routes(tmp_path, """\
        backends: {legacy: {url: "http://127.0.0.1:1"}}
        fallback: legacy
        routes:
          - name: events
            match: {path: {prefix: /api/events}}
            admission: {rate: 600/m, session: 5m}
        """)
    spec = load(path).routes[0].admission
    assert spec is not None and spec.rate == 10.0 and spec.session == 300.0
    assert (spec.queue, spec.grace, spec.paused, spec.on_store_down) == (100000, 60.0, False, "open")
    path.write_text(path.read_text().replace("rate: 600/m", "rate: fast").replace("session", "sesion"))
    with pytest.raises(ConfigError) as err:
        load(path)
    text = "\n".join(err.value.problems)
    assert "routes.yaml:10: route 'events': key 'admission.rate': expected a rate like 100/s" in text
    assert "unknown key 'sesion'" in text and "did you mean 'session'" in text


# -- a real gateway -------------------------------------------------------------------------------------------------


class Visitors:
    """A backend that records which visitor (X-Visitor) it saw, and when."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            self.seen.append((request.headers.get("X-Visitor", ""), time.monotonic()))
            return web.Response(text="ok", headers={"X-Served-By": "legacy"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


def room_routes(backend: str, admission: str, extra: str = "") -> str:
    return f"""\
backends: {{legacy: {{url: "{backend}"}}}}
fallback: legacy
routes:
  - name: events
    match: {{path: {{prefix: /api/events}}}}
    admission: {admission}
  - name: gifts
    match: {{path: {{prefix: /api/gifts}}}}
    admission: {admission}
{extra}"""


async def visit(s: aiohttp.ClientSession, url: str, cookie: str | None, **headers: str
                ) -> tuple[int, aiohttp.typedefs.LooseHeaders, dict | str, str | None]:
    """One request with the visitor's ticket cookie (if any); returns status, headers, body, the new cookie."""
    if cookie:
        headers["Cookie"] = cookie
    async with s.get(url, headers=headers) as resp:
        body: dict | str = await resp.json(content_type=None) if resp.content_type.endswith("json") \
            else await resp.text()
        set_cookie = resp.headers.get("Set-Cookie")
        return resp.status, resp.headers, body, set_cookie.split(";")[0] if set_cookie else cookie


def session() -> aiohttp.ClientSession:
    # Each visitor's cookie is carried by hand, so one session serves them all.
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


async def test_spike_of_120_is_let_in_at_the_rate_in_arrival_order(tmp_path: Path) -> None:
    backend = Visitors()
    rate = 20
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, f"{{rate: {rate}/s, session: 1m}}"))
        async with run_gateway(path) as gw, session() as s:
            target = public_url(gw) + "/api/events"
            arrival: dict[str, int] = {}
            positions: dict[str, list[int]] = collections.defaultdict(list)

            async def visitor(name: str) -> None:
                cookie = None
                for _ in range(100):                         # bounded: 100 polls
                    status, headers, _body, cookie = await visit(s, target, cookie, **{"X-Visitor": name})
                    if status == 200:
                        return
                    assert status == 503
                    positions[name].append(int(headers["X-Queue-Position"]))
                    await asyncio.sleep(int(headers["Retry-After"]))
                raise AssertionError(f"{name} never got in")

            names = [f"v{i:03d}" for i in range(120)]
            started = time.monotonic()
            tasks = []
            for i, name in enumerate(names):               # all at once, in a known arrival order
                arrival[name] = i
                tasks.append(asyncio.create_task(visitor(name)))
                await asyncio.sleep(0)
            await asyncio.gather(*tasks)

    seen = backend.seen
    counts = collections.Counter(v for v, _ in seen)
    assert len(counts) == 120 and set(counts.values()) == {1}    # each visitor reached the backend once
    span = seen[-1][1] - started
    per_second = collections.Counter(int(t - started) for _, t in seen)
    order = [v for v, _ in seen]
    displacement = max(abs(order.index(v) - arrival[v]) for v in names)
    print(f"\n120 visitors at {rate}/s: all in after {span:.2f} s; per second {sorted(per_second.items())}; "
          f"largest displacement from arrival order {displacement}")
    assert 4.5 <= span <= 7.0
    assert max(per_second.values()) <= rate + 2               # the rate plus the small saved-up burst
    assert displacement <= rate                               # at most one second's admissions apart
    for name, seq in positions.items():
        assert seq == sorted(seq, reverse=True), (name, seq)  # a visitor's position only goes down


async def test_tampered_expired_and_foreign_tickets_are_worth_nothing(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 12/m, session: 2s}"))
        async with run_gateway(path) as gw, session() as s:
            base = public_url(gw)
            status, _h, _b, ticket = await visit(s, base + "/api/events", None)
            assert status == 200 and ticket is not None and ":a:events:" in ticket     # the first one is let in
            status, _h, body, _c = await visit(s, base + "/api/events", None)
            assert status == 503 and body["position"] == 1                            # the next one waits
            hits = len(backend.seen)
            for _ in range(3):                                                        # genuine: passes
                assert (await visit(s, base + "/api/events", ticket))[0] == 200
            assert len(backend.seen) == hits + 3

            name, value = ticket.split("=", 1)
            fields = value.split(":")
            fields[4] = "99"
            for forged, why in ((f"{name}={':'.join(fields)}", "bad signature"),
                                (f"{name}={value[:-3]}AAA", "bad signature")):
                status, _h, body, _c = await visit(s, base + "/api/events", forged)
                assert status == 503 and body["ticket"] == f"refused: {why}", body
            await visit(s, base + "/api/gifts", None)                                 # spend gifts' token
            foreign = f"{cookie_name('gifts')}={value}"
            status, _h, body, _c = await visit(s, base + "/api/gifts", foreign)
            assert status == 503 and body["ticket"] == "refused: issued for route 'events'"

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:                                        # the session runs out
                status, _h, body, _c = await visit(s, base + "/api/events", ticket)
                if status == 503:
                    break
                await asyncio.sleep(0.1)
            assert status == 503 and body["ticket"] == "refused: expired"


async def test_browser_gets_a_self_refreshing_waiting_page(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 1/m}"))
        async with run_gateway(path) as gw, session() as s:
            await visit(s, public_url(gw) + "/api/events", None)
            status, headers, page, _c = await visit(s, public_url(gw) + "/api/events", None,
                                                    Accept="text/html,application/xhtml+xml")
            assert status == 503 and headers["Content-Type"].startswith("text/html")
            assert '<meta http-equiv="refresh" content="' in page and '<p class="n">1</p>' in page
            assert "<script" not in page and "http://" not in page and "https://" not in page
            assert headers["X-Queue-Position"] == "1" and int(headers["Retry-After"]) >= 1


async def test_full_line_is_turned_away(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 1/m, queue: 2}"))
        async with run_gateway(path) as gw, session() as s:
            got = [await visit(s, public_url(gw) + "/api/events", None) for _ in range(4)]
            assert [g[0] for g in got] == [200, 503, 503, 503]
            full = got[3][2]
            assert full["type"] == "urn:strangler:problem:waiting-room-full" and "Retry-After" in got[3][1]


async def test_reload_retunes_without_losing_places_and_writes_history(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 1/m}"))
        async with run_gateway(path) as gw, session() as s:
            base = public_url(gw)
            await visit(s, base + "/api/events", None)
            waiting = [await visit(s, base + "/api/events", None) for _ in range(3)]
            assert [w[2]["position"] for w in waiting] == [1, 2, 3]
            path.write_text(path.read_text().replace("{rate: 1/m}", "{rate: 2/m, paused: true}", 1))
            assert (await gw.reloader.reload("test")).ok
            again = [await visit(s, base + "/api/events", w[3]) for w in waiting]
            assert [a[2]["position"] for a in again] == [1, 2, 3] and again[0][2]["eta_s"] is None
            path.write_text(path.read_text().replace("{rate: 2/m, paused: true}", "{rate: 50/s}", 1))
            assert (await gw.reloader.reload("test")).ok
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (await visit(s, base + "/api/events", waiting[2][3]))[0] != 200:
                await asyncio.sleep(0.05)
            assert (await visit(s, base + "/api/events", waiting[0][3]))[0] == 200   # same ticket, let in
            history = gw.state.history("events")
            kinds = [h["kind"] for h in reversed(history)]
            assert kinds[:1] == ["admission_opened"] and "admission_paused" in kinds
            assert "admission_resumed" in kinds
            changed = [h for h in history if h["kind"] == "admission_changed"]
            assert changed and changed[0]["detail"]["fields"]["rate"] == [2 / 60, 50.0]


async def test_admin_surfaces_show_the_room(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 1/m}"))
        async with run_gateway(path) as gw, session() as s:
            base, admin = public_url(gw), admin_url(gw)
            ticket = (await visit(s, base + "/api/events", None))[3]
            for _ in range(3):
                await visit(s, base + "/api/events", None)
            async with s.get(admin + "/api/routes") as resp:
                view = next(r for r in await resp.json() if r["name"] == "events")
            room = view["admission"]
            assert room["waiting"] == 3 and room["rate"] == 1 / 60 and room["admitted_direct"] == 1
            assert {"admitted_per_s", "wait_p50_s", "wait_p99_s"} <= room.keys()
            async with s.get(admin + "/metrics") as resp:
                text = await resp.text()
            assert 'strangler_admission_waiting{route="events"} 3.0' in text
            assert 'strangler_admission_admitted_total{how="direct",route="events"} 1.0' in text
            # Rotating the key keeps the admitted session valid (the old key verifies for a while).
            async with s.post(admin + "/api/admission/rotate-key") as resp:
                assert resp.status == 401
            async with s.post(admin + "/api/admission/rotate-key",
                              headers={"Authorization": f"Bearer {gw.token}"}) as resp:
                assert resp.status == 200 and len((await resp.json())["accepted"]) == 2
            assert (await visit(s, base + "/api/events", ticket))[0] == 200
            out = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "gateway", "routes", "-c", str(path), "--admin", admin.split("//")[1]],
                capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "3 waiting" in out.stdout


async def test_store_down_fails_open_or_closed_as_configured(tmp_path: Path) -> None:
    backend = Visitors()
    async with serve_app(backend.app()) as url:
        path = write_routes(tmp_path, room_routes(url, "{rate: 1/m}").replace(
            "  - name: gifts\n    match: {path: {prefix: /api/gifts}}\n    admission: {rate: 1/m}",
            "  - name: gifts\n    match: {path: {prefix: /api/gifts}}\n    admission: {rate: 1/m, "
            "on_store_down: closed}"))
        async with run_gateway(path) as gw, session() as s:
            base = public_url(gw)
            for p in ("/api/events", "/api/gifts"):
                await visit(s, base + p, None)
                assert (await visit(s, base + p, None))[0] == 503
            queue = gw.stores.admission
            queue._db.close()                       # the disk under the store goes away
            await queue.maintain()
            assert not queue.available
            assert (await visit(s, base + "/api/events", None))[0] == 200         # fails open
            status, _h, body, _c = await visit(s, base + "/api/gifts", None)      # fails closed
            assert status == 503 and body["type"] == "urn:strangler:problem:waiting-room-unavailable"
            async with s.get(admin_url(gw) + "/api/admission") as resp:
                assert all(r["store"].startswith("down") for r in await resp.json())
            queue._db = __import__("gateway.stores.sqlite", fromlist=["connect"]).connect(
                tmp_path / "store" / "admission.db")
            await queue.maintain()
            assert queue.available


def test_restart_keeps_the_line_and_the_sessions(tmp_path: Path) -> None:
    """A gateway subprocess, stopped and started again: the admitted visitor still passes, the waiting ones keep
    their places."""
    import urllib.error
    import urllib.request

    async def backend_main(ready: asyncio.Event, stop: asyncio.Event, box: list[str]) -> None:
        async with serve_app(Visitors().app()) as url:
            box.append(url)
            ready.set()
            await stop.wait()

    import threading

    loop = asyncio.new_event_loop()
    ready, stop, box = asyncio.Event(), asyncio.Event(), []
    thread = threading.Thread(target=lambda: loop.run_until_complete(backend_main(ready, stop, box)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not box and time.monotonic() < deadline:
        time.sleep(0.01)
    port, admin = free_port(), free_port()
    path = write_routes(tmp_path, room_routes(box[0], "{rate: 1/h, session: 10m}"))
    path.write_text(path.read_text().replace("listen: 127.0.0.1:0\n", f"listen: 127.0.0.1:{port}\n", 1)
                    .replace("{listen: 127.0.0.1:0}", f"{{listen: 127.0.0.1:{admin}}}"))

    def get(cookie: str | None) -> tuple[int, dict, str | None]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/events", headers={"Cookie": cookie} if cookie
                                     else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                set_cookie = resp.headers.get("Set-Cookie")
                return resp.status, {}, set_cookie.split(";")[0] if set_cookie else cookie
        except urllib.error.HTTPError as exc:
            set_cookie = exc.headers.get("Set-Cookie")
            return exc.code, json.loads(exc.read()), set_cookie.split(";")[0] if set_cookie else cookie

    cmd = [sys.executable, "-m", "gateway", "up", "-c", str(path)]
    try:
        with process(cmd, tmp_path / "first.log"):
            wait_http(f"http://127.0.0.1:{admin}/readyz")
            status, _b, admitted = get(None)
            assert status == 200
            waiting = [get(None) for _ in range(3)]
            assert [w[1]["position"] for w in waiting] == [1, 2, 3]
        with process(cmd, tmp_path / "second.log"):
            wait_http(f"http://127.0.0.1:{admin}/readyz")
            assert get(admitted)[0] == 200                                     # the session survived
            again = [get(w[2]) for w in reversed(waiting)]                     # polled in reverse order
            assert [a[1]["position"] for a in again] == [3, 2, 1]              # same places
            assert get(None)[1]["position"] == 4                               # newcomers queue behind them
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
