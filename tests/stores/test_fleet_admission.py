"""Waiting rooms on the shared store: one line per route for the whole fleet, on a real PostgreSQL.

Two stores on one database number visitors in one arrival order, call them at the rate in total and share the
keys; an unreachable store says so instead of failing; and three real gateways let a spike spread over them in,
in order, at the configured rate in total, with tickets issued by one passing on another.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.admission.tickets import ADMITTED, Signer, Ticket, cookie_name, cookie_value
from gateway.config.parse import load
from gateway.stores.open import open_stores
from gateway.stores.postgres.admission import PgAdmissionQueue
from tests.stores.fleet_support import fleet, routes_text
from tests.stores.pg_cluster import PASSWORD, Cluster
from tests.support import Backend, refused_port, serve_app, write_routes

pytestmark = pytest.mark.timeout(180)




def _queue(tmp_path: Path, url: str, name: str, monkeypatch: pytest.MonkeyPatch) -> PgAdmissionQueue:
    monkeypatch.setenv("STRANGLER_STORE_URL", url)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    d = tmp_path / name
    d.mkdir()
    cfg = load(write_routes(d, 'backends: {legacy: {url: "http://127.0.0.1:1"}}\nfallback: legacy\n'))
    stores = open_stores(cfg, instance=name)
    assert isinstance(stores.admission, PgAdmissionQueue)
    return stores.admission


async def test_two_instances_share_one_line_its_numbers_its_rate_and_its_keys(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _queue(tmp_path, db_url, "a", monkeypatch), _queue(tmp_path, db_url, "b", monkeypatch)
    rate = 10.0
    assert a.configure("events", rate, 1.0, 1000, 60.0, False) is True     # a opened the room
    assert b.configure("events", rate, 1.0, 1000, 60.0, False) is False    # b joined it
    assert a.epoch("events") == b.epoch("events") == a.line_id("events") != ""
    assert [k.kid for k in a.keys()] == [k.kid for k in b.keys()]
    ticket = Ticket(ADMITTED, "events", a.epoch("events"), 0, int(time.time()), int(time.time()) + 60)
    signed = Signer(a.keys).sign(ticket)
    assert Signer(b.keys).verify(signed, "events", (b.epoch("events"), b.line_id("events")), time.time(),
                                 60).kind == ADMITTED

    # Forty visitors arrive alternately on a and b: one numbering, in arrival order, positions fleet-wide.
    a.enter("events"), b.enter("events")                                    # the direct tokens are spent
    numbers = []
    for i in range(40):
        time.sleep(0.001)              # arrivals on two machines within a microsecond have no order to keep
        q = (a, b)[i % 2]
        joined = q.join("events")
        assert joined is not None
        numbers.append((q, joined[0]))
    assert [n for _, n in numbers] == sorted(n for _, n in numbers)
    # b's visitor polls a before either synchronised: the place is kept, not lost
    assert a.poll("events", numbers[1][1]) > 0
    for q in (a, b, a):                 # the first to synchronise sees the other's arrivals the next time
        await q.maintain()
    assert a.waiting("events") > 30 and abs(a.waiting("events") - b.waiting("events")) <= 2
    for q in (a, b):
        positions = [q.poll("events", n) for _, n in numbers]
        assert [p for p in positions if p > 0] == sorted(p for p in positions if p > 0)
        assert positions[-1] == q.waiting("events")                        # the last of both is last on each
        assert numbers[-1][0] is b and positions[-1] > 30                  # b's last is behind a's visitors

    # Every visitor polls whichever instance; both run their upkeep; the fleet calls at the rate in total.
    let_in: list[tuple[float, int]] = []
    start = time.monotonic()
    rotate = 0
    while len(let_in) < 40 and time.monotonic() - start < 15:
        for _, n in numbers:
            if any(n == m for _, m in let_in):
                continue
            rotate += 1
            if (a, b)[rotate % 2].poll("events", n) == 0:
                let_in.append((time.monotonic() - start, n))
        await asyncio.gather(a.maintain(), b.maintain())
        await asyncio.sleep(0.2)
    took = time.monotonic() - start
    assert len(let_in) == 40
    assert [n for _, n in let_in] == sorted(n for _, n in let_in)          # called in arrival order
    # 40 at 10/s (with the bucket's first token and the direct admissions debited): about 4 s, not 2
    assert 3.0 <= took <= 6.0, took
    per_second = [sum(1 for t, _ in let_in if int(t) == s) for s in range(int(took) + 1)]
    assert max(per_second) <= rate + 3, per_second
    print(f"\n40 visitors over 2 instances at 10/s: all in after {took:.2f} s; per second {per_second}")
    a.close()
    b.close()


async def test_a_store_out_of_reach_makes_the_rooms_unavailable_without_failing(tmp_path: Path) -> None:
    q = PgAdmissionQueue(f"host=127.0.0.1 port={refused_port()} dbname=x user=x connect_timeout=1", "a")
    assert q.available is False and q.problem
    assert q.configure("events", 10.0, 1.0, 100, 60.0, False) is False
    assert q.enter("events") in (True, False)                                # answers from memory
    assert await q.maintain() == 0
    assert q.available is False and q.problem
    assert q.keys()                                                          # something to verify against
    q.close()


async def test_three_gateways_let_a_spike_in_at_the_rate_in_total_and_honour_each_others_tickets(
        tmp_path: Path, db_url: str) -> None:
    backend = Backend("legacy")
    async with serve_app(backend.app()) as legacy:
        extra = ("  - name: events\n    match: {path: {prefix: /api/events}}\n    to: legacy\n"
                 "    admission: {rate: 10/s, grace: 30s}\n")
        with fleet(tmp_path, db_url, routes_text(legacy, legacy, extra)) as gws:
            await asyncio.sleep(1.5)                        # every instance has synchronised once
            name = cookie_name("events")
            async with aiohttp.ClientSession() as s:
                async def visit(i: int, cookie: str | None) -> tuple[int, str | None, int]:
                    gw = gws[i % len(gws)]
                    headers = {"Cookie": f"{name}={cookie}"} if cookie else {}
                    async with s.get(gw.public_url + "/api/events", headers=headers) as r:
                        await r.read()
                        new = cookie_value(r.headers.get("Set-Cookie", ""), name)
                        return r.status, new or cookie, int(r.headers.get("Retry-After", "0"))

                n = 45
                first = await asyncio.gather(*(visit(i, None) for i in range(n)))
                start = time.monotonic()
                cookies = [c for _, c, _ in first]
                admitted_at: dict[int, float] = {i: 0.0 for i, (st, _, _) in enumerate(first) if st == 200}
                order: list[int] = [i for i in range(n) if i in admitted_at]

                async def wait_turn(i: int) -> None:
                    hop = i + 1                                         # each return lands on another instance
                    while i not in admitted_at:
                        await asyncio.sleep(0.5)
                        status, cookies[i], _ = await visit(hop, cookies[i])
                        hop += 1
                        if status == 200:
                            admitted_at[i] = time.monotonic() - start
                            order.append(i)
                        else:
                            assert status == 503

                await asyncio.wait_for(asyncio.gather(*(wait_turn(i) for i in range(n))), 30)
                took = time.monotonic() - start
                # 45 at 10/s in total: about 4.5 s (three instances each at the full rate would take 1.5 s)
                assert took >= 3.0, took
                per_second = [sum(1 for t in admitted_at.values() if int(t) == sec) for sec in range(int(took) + 1)]
                # Counted when each visitor came back (every 0.5 s), not when the fleet called it: up to half a
                # second's calls (5) can land in the next second. Three instances each at the full rate: 30.
                assert max(per_second) <= 10 + 5, per_second
                # arrival order is the order of the numbers the fleet handed out (in the waiting tickets)
                numbers = {i: int(c.split(":")[4]) for i, (st, c, _) in enumerate(first) if st == 503 and c}
                queued = [i for i in order if i in numbers]
                rank = {i: r for r, i in enumerate(sorted(numbers, key=numbers.__getitem__))}
                displacement = max(abs(pos - rank[i]) for pos, i in enumerate(queued))
                assert displacement <= 10, (queued, rank)     # at most a second's admissions
                print(f"\n{n} visitors over 3 gateways at 10/s: all in after {took:.2f} s; per second "
                      f"{per_second}; largest displacement from arrival order {displacement}")

                # an admitted ticket from one instance passes on every other without queueing again
                for j in range(3):
                    status, again, _ = await visit(j, cookies[0])
                    assert status == 200 and again == cookies[0]
                rooms = gws[2].get("/api/admission")
                assert rooms[0]["store"] == "ok"


async def test_the_store_going_away_and_back_keeps_the_line(tmp_path: Path, pg: Cluster, db_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _queue(tmp_path, db_url, "a", monkeypatch), _queue(tmp_path, db_url, "b", monkeypatch)
    try:
        for q in (a, b):
            q.configure("events", 1.0, 1.0, 100, 60.0, True)          # paused: nobody is called meanwhile
        first = a.join("events")
        assert first is not None
        await a.maintain()
        pg.stop()
        await a.maintain()
        assert a.available is False and a.problem                       # the rooms follow on_store_down
        # the request path still answers from memory, and a place taken meanwhile is written afterwards
        second = a.join("events")
        assert second is not None and second[1] == 2
        assert a.poll("events", first[0]) == 1
        pg.start()
        pg.wait_up()
        await a.maintain()
        assert a.available is True and a.problem == ""
        await b.maintain()
        assert b.available is True
        assert b.waiting("events") == 2 and b.poll("events", second[0]) == 2
    finally:
        a.close()
        b.close()
