"""``AdmissionQueue`` on the shared store: one waiting line per route for the whole fleet.

The request path never waits for the database: each instance keeps a local view of every line (the waiting
numbers in order, the numbers called) and answers ``enter``, ``join`` and ``poll`` from it. ``maintain`` (about
once a second, in a worker thread) synchronises the view with the store, one transaction per route:

1. it writes what happened here since the last time: the numbers handed out, the numbers that polled (their
   place is kept), the called numbers let in (gone from the line), how many were let in directly;
2. under the line's row lock (``SELECT ... FOR UPDATE``: one instance at a time runs the fleet's bucket) it
   sweeps out the visitors silent for longer than the grace, adds the tokens earned since the bucket was last
   run, minus the direct admissions of every instance, and calls numbers from the head of the line, each for the
   moment its token is earned, up to ``LOOKAHEAD_S`` ahead (so visitors are let in at the rate, not in steps of
   a synchronisation); only numbers handed out before every instance last synchronised are called;
3. it reads the line back: the next view.

Tables (migration 4): ``admission_lines`` (route, epoch, the fleet's bucket, how many lost their place),
``admission_places`` (route, number, state ``w`` waiting or ``c`` called, ``at``: the last poll of a waiting
number, the deadline of a called one: the moment it may come in plus the grace), ``admission_presence`` (which instances serve the room: each lets in at
most its share of the rate directly) and ``admission_keys`` (the keys that sign tickets, shared, so a ticket
signed by one instance is good on every other).

Numbers are handed out here without asking anyone: microseconds of the wall clock times 1024 plus a slot drawn
at random per instance, so numbers from every instance interleave in arrival order. A number issued by another
instance in the last ``RECENT_S`` seconds that this view does not show yet is one that was not synchronised yet:
it is taken as waiting (a visitor whose next request lands on another instance keeps the place).

While the store cannot be reached ``available`` is False (the rooms open or close as ``on_store_down`` says) and
what happened locally is kept to be written when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

import psycopg

from gateway.stores.admission import SigningKey
from gateway.stores.postgres.schema import MIGRATION_LOCK, migrate

log = logging.getLogger("strangler.admission")

SLOT_BITS = 10
RECENT_S = 5.0          # a number this young may not have reached the store yet: it is not "unknown"
PRESENCE_S = 5.0
LOOKAHEAD_S = 1.5       # numbers are called this far ahead: longer than the instances' synchronisation interval        # an instance silent this long no longer takes a share of the direct admissions
KEY_RETENTION_S = 86400.0
# Keys are created once per store; the lock keeps two instances starting together from both creating one.
KEYS_LOCK = MIGRATION_LOCK + 1


@dataclass
class _View:
    """One route's line as this instance sees it, plus what it has to tell the store."""

    rate: float
    capacity: float
    limit: int
    grace: float
    paused: bool
    epoch: str = ""
    waiting: list[int] = field(default_factory=list)      # fleet-wide waiting numbers, ascending
    known: set[int] = field(default_factory=set)          # the same, for membership
    called: dict[int, float] = field(default_factory=dict)   # number -> when it may come in (wall clock)
    due: list[float] = field(default_factory=list)         # those times, ascending
    instances: int = 1
    lost: int = 0
    # since the last synchronisation
    joins: list[int] = field(default_factory=list)
    polled: set[int] = field(default_factory=set)
    used: set[int] = field(default_factory=set)
    entered: int = 0
    # the share of direct admissions this instance may let in
    tokens: float = 1.0
    last: float = field(default_factory=time.monotonic)

    def take_pending(self) -> tuple[list[int], set[int], set[int], int]:
        out = (self.joins, self.polled, self.used, self.entered)
        self.joins, self.polled, self.used, self.entered = [], set(), set(), 0
        return out

    def give_back(self, pending: tuple[list[int], set[int], set[int], int]) -> None:
        """A synchronisation failed: what it carried is written next time."""
        joins, polled, used, entered = pending
        self.joins = joins + self.joins
        self.polled |= polled
        self.used |= used
        self.entered += entered


@dataclass
class _Synced:
    epoch: str
    created: bool
    waiting: list[int]
    called: dict[int, float]
    instances: int
    lost: int


class PgAdmissionQueue:
    """``AdmissionQueue`` shared by every instance on one PostgreSQL database."""

    def __init__(self, conninfo: str, instance: str) -> None:
        self.conninfo = conninfo
        self.instance = instance or secrets.token_hex(4)
        self.available = False
        self.problem = "not connected yet"
        self._slot = secrets.randbelow(1 << SLOT_BITS)
        self._last_us = 0
        self._lock = threading.Lock()          # one user of the connection at a time
        self._conn: psycopg.Connection | None = None
        self._views: dict[str, _View] = {}
        self._gone: set[str] = set()
        # Until the store answers there is no shared key; this one signs nothing that leaves the process while
        # the rooms are unavailable (they then open or close without issuing tickets).
        self._keys: list[SigningKey] = [SigningKey(0, secrets.token_bytes(32), time.time(), None)]
        try:
            with self._lock:
                self._load_keys(self._connection())
            self._up()
        except psycopg.Error as exc:
            self._down(exc)

    # -- lines ------------------------------------------------------------------------------------------------------

    def configure(self, route: str, rate: float, capacity: float, limit: int, grace: float,
                  paused: bool) -> bool:
        """Open (or retune) the line; True when this call created it in the store. A new line is synchronised
        at once (a reload, not the request path) so that its epoch is the fleet's before the first visitor."""
        view = self._views.get(route)
        if view is not None:
            view.rate, view.capacity, view.limit, view.grace, view.paused = rate, capacity, limit, grace, paused
            return False
        self._gone.discard(route)
        view = self._views[route] = _View(rate, capacity, limit, grace, paused)
        if self._conn is None and not self.available:
            return False                         # the store is away: the next ``maintain`` opens it there
        try:
            with self._lock:
                synced = self._sync_route(self._connection(), route, view, view.take_pending())
            self._apply(view, synced)
            return synced.created
        except psycopg.Error as exc:
            self._down(exc)
            return False

    def remove(self, route: str) -> None:
        if self._views.pop(route, None) is not None:
            self._gone.add(route)

    def routes(self) -> list[str]:
        return list(self._views)

    def epoch(self, route: str) -> str:
        view = self._views.get(route)
        return view.epoch if view is not None else ""

    def line_id(self, route: str) -> str:
        # One line for the fleet: a waiting ticket is good on every instance.
        return self.epoch(route)

    # -- the request path: the local view only ----------------------------------------------------------------------

    def enter(self, route: str) -> bool:
        view = self._views.get(route)
        if view is None:
            return True
        if view.paused or view.waiting or _pending(view):
            return False
        # Every instance lets in at most its share of the rate directly; the store's bucket is debited with
        # what each let in, so the line behind is called at what is left of the rate.
        now = time.monotonic()
        share = view.rate / max(1, view.instances)
        cap = max(1.0, view.capacity / max(1, view.instances))
        view.tokens = min(cap, view.tokens + (now - view.last) * share)
        view.last = now
        if view.tokens >= 1.0:
            view.tokens -= 1.0
            view.entered += 1
            return True
        return False

    def join(self, route: str) -> tuple[int, int] | None:
        view = self._views.get(route)
        if view is None or len(view.waiting) >= view.limit:
            return None
        number = self._number()
        insort(view.waiting, number)
        view.known.add(number)
        view.joins.append(number)
        return number, bisect_left(view.waiting, number) + 1 + _pending(view)

    def poll(self, route: str, number: int) -> int:
        view = self._views.get(route)
        if view is None:
            return -1
        at = view.called.get(number)
        if at is not None:
            if at <= time.time():
                del view.called[number]
                view.used.add(number)
                return 0
            # called for a moment just ahead: those called before it and not yet due are ahead of it
            return max(1, sum(1 for n, t in view.called.items() if n < number and t > time.time()) + 1)
        if number not in view.known:
            if number in view.used or not _recent(number):
                return -1
            insort(view.waiting, number)          # issued elsewhere a moment ago, not synchronised yet
            view.known.add(number)
        view.polled.add(number)
        return bisect_left(view.waiting, number) + 1 + _pending(view)

    def eta(self, route: str, position: int) -> float:
        view = self._views.get(route)
        if view is None:
            return 0.0
        if view.paused:
            return float("inf")
        return max(0.0, position / view.rate)

    def waiting(self, route: str) -> int:
        view = self._views.get(route)
        return len(view.waiting) + _pending(view) if view is not None else 0

    def lost(self, route: str) -> int:
        view = self._views.get(route)
        return view.lost if view is not None else 0

    def _number(self) -> int:
        us = time.time_ns() // 1000
        if us <= self._last_us:
            us = self._last_us + 1
        self._last_us = us
        return (us << SLOT_BITS) | self._slot

    # -- keys -------------------------------------------------------------------------------------------------------

    def keys(self) -> list[SigningKey]:
        return self._keys

    def rotate_key(self) -> SigningKey:
        now = time.time()
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (KEYS_LOCK,))
                conn.execute("UPDATE admission_keys SET retired = %s WHERE retired IS NULL", (now,))
                conn.execute("INSERT INTO admission_keys (secret, created) VALUES (%s, %s)",
                             (secrets.token_bytes(32), now))
                conn.execute("DELETE FROM admission_keys WHERE retired < %s", (now - KEY_RETENTION_S,))
            self._load_keys(conn)
        return self._keys[0]

    def _load_keys(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (KEYS_LOCK,))
            rows = conn.execute("SELECT kid, secret, created, retired FROM admission_keys ORDER BY kid DESC"
                                ).fetchall()
            if not rows:
                rows = conn.execute("INSERT INTO admission_keys (secret, created) VALUES (%s, %s) "
                                    "RETURNING kid, secret, created, retired",
                                    (secrets.token_bytes(32), time.time())).fetchall()
        keys = [SigningKey(int(r[0]), bytes(r[1]), r[2], r[3]) for r in rows]
        # The same list object while nothing changed: signers remember what they verified until it changes.
        if [(k.kid, k.retired) for k in keys] != [(k.kid, k.retired) for k in self._keys]:
            self._keys = keys

    # -- upkeep -----------------------------------------------------------------------------------------------------

    async def maintain(self) -> int:
        """Synchronise every line with the store (in a thread); returns how many lost their place fleet-wide
        since the last time, as this instance saw it."""
        views = dict(self._views)
        work = [(route, view, view.take_pending()) for route, view in views.items()]
        gone, self._gone = self._gone, set()
        before = sum(v.lost for v in views.values())
        try:
            results = await asyncio.to_thread(self._sync_all, work, gone)
        except psycopg.Error as exc:
            for _route, view, pending in work:
                view.give_back(pending)
            self._gone |= gone - set(self._views)
            self._down(exc)
            return 0
        for (route, view, _pending), synced in zip(work, results, strict=True):
            if self._views.get(route) is view:
                self._apply(view, synced)
        self._up()
        return max(0, sum(v.lost for v in views.values()) - before)

    async def flush(self) -> None:
        """Write what happened here (at shutdown)."""
        await self.maintain()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _sync_all(self, work: list[tuple[str, _View, tuple[list[int], set[int], set[int], int]]],
                  gone: set[str]) -> list[_Synced]:
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                out: list[_Synced] = []
                try:
                    conn = self._connection()
                    if gone:
                        # The room was removed from routes.yaml: its line goes (a room opened again is a new one).
                        conn.execute("DELETE FROM admission_lines WHERE route = ANY(%s)", (list(gone),))
                    for route, view, pending in work:
                        out.append(self._sync_route(conn, route, view, pending))
                    self._load_keys(conn)
                    return out
                except psycopg.Error:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    # A connection the server dropped while idle (a restart) fails on first use: one retry on a
                    # new one, when nothing was committed yet (a direct admission must not be debited twice).
                    if attempt == 2 or not reused or out:
                        raise
            raise AssertionError("unreachable")

    def _sync_route(self, conn: psycopg.Connection, route: str, view: _View,
                    pending: tuple[list[int], set[int], set[int], int]) -> _Synced:
        joins, polled, used, entered = pending
        rate, capacity, grace, paused = view.rate, view.capacity, view.grace, view.paused
        with conn.transaction():
            now = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])  # type: ignore[index]
            created = conn.execute(
                "INSERT INTO admission_lines (route, epoch, tokens, last) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (route) DO NOTHING RETURNING epoch",
                (route, secrets.token_hex(4), min(1.0, capacity), now)).fetchone() is not None
            # The row lock: one instance at a time runs this line's bucket.
            epoch, tokens, last, lost = conn.execute(
                "SELECT epoch, tokens, last, lost FROM admission_lines WHERE route = %s FOR UPDATE",
                (route,)).fetchone()  # type: ignore[misc]
            marks = [(route, n, now) for n in {*joins, *polled}]
            if marks:
                # A number that polled keeps (or, issued elsewhere a moment ago, takes) its place; a called one
                # stays called.
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO admission_places (route, number, state, at) VALUES (%s, %s, 'w', %s) "
                        "ON CONFLICT (route, number) DO UPDATE SET at = EXCLUDED.at "
                        "WHERE admission_places.state = 'w'", marks)
            if used:
                conn.execute("DELETE FROM admission_places WHERE route = %s AND number = ANY(%s)",
                             (route, list(used)))
            conn.execute("INSERT INTO admission_presence VALUES (%s, %s, %s) ON CONFLICT (route, instance) "
                         "DO UPDATE SET seen = EXCLUDED.seen", (route, self.instance, now))
            instances, watermark = conn.execute(
                "SELECT count(*), min(seen) FROM admission_presence WHERE route = %s AND seen > %s",
                (route, now - PRESENCE_S)).fetchone()  # type: ignore[misc]
            # Only numbers handed out before every instance last synchronised are called: a number issued later
            # may have an earlier one, not yet written, ahead of it on another instance.
            ready = int(watermark * 1e6) << SLOT_BITS
            swept = conn.execute("DELETE FROM admission_places WHERE route = %s AND ((state = 'w' AND at < %s) "
                                 "OR (state = 'c' AND at < %s))", (route, now - grace, now)).rowcount
            tokens -= entered
            callable_ = conn.execute(
                "SELECT count(*) FROM admission_places WHERE route = %s AND state = 'w' AND number < %s",
                (route, ready)).fetchone()[0]  # type: ignore[index]
            if not paused:
                tokens += max(0.0, now - last) * rate
                # Numbers are called ahead, each at the moment its token is earned (spaced 1/rate): the
                # instances synchronise about once a second, and visitors are let in at the rate, not in steps.
                budget = tokens + LOOKAHEAD_S * rate
                n = min(int(budget), callable_) if budget >= 1 else 0
                if n:
                    heads = conn.execute("SELECT number FROM admission_places WHERE route = %s AND state = 'w' "
                                         "AND number < %s ORDER BY number LIMIT %s", (route, ready, n)).fetchall()
                    with conn.cursor() as cur:
                        cur.executemany(
                            "UPDATE admission_places SET state = 'c', at = %s WHERE route = %s AND number = %s",
                            [(now + max(0.0, (i + 1 - tokens) / rate) + grace, route, h[0])
                             for i, h in enumerate(heads)])
                    tokens -= n
                if n == callable_:
                    # Not held back by the rate (nobody waits, or those waiting cannot be called yet): saved-up
                    # tokens are capped, so a quiet moment lets in at most ``capacity`` at once.
                    tokens = min(tokens, capacity)
            conn.execute("UPDATE admission_lines SET tokens = %s, last = %s, lost = lost + %s WHERE route = %s",
                         (tokens, now, swept, route))
            rows = conn.execute("SELECT number, state, at FROM admission_places WHERE route = %s ORDER BY number",
                                (route,)).fetchall()
        return _Synced(epoch, created, [n for n, st, _ in rows if st == "w"],
                       {n: at - grace for n, st, at in rows if st == "c"}, int(instances), int(lost) + swept)

    def _apply(self, view: _View, synced: _Synced) -> None:
        """The store's line becomes the view, plus what happened here while it was being read."""
        waiting = synced.waiting
        fresh = [n for n in view.joins if n not in synced.called]
        if fresh or view.polled:
            extra = {*fresh, *(n for n in view.polled if _recent(n) and n not in synced.called)}
            waiting = sorted({*waiting, *extra})
        view.waiting, view.known = waiting, set(waiting)
        view.called = {n: t for n, t in synced.called.items() if n not in view.used}
        view.due = sorted(view.called.values())
        view.epoch, view.instances, view.lost = synced.epoch, synced.instances, synced.lost

    # -- the connection ---------------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            try:
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _up(self) -> None:
        if not self.available:
            log.info("waiting-room store available", extra={"event": "admission_store_up"})
        self.available, self.problem = True, ""

    def _down(self, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()
        problem = text[0] if text else type(exc).__name__
        if self.available:
            log.error("waiting-room store unavailable: %s", problem, extra={"event": "admission_store_down"})
        self.available, self.problem = False, problem
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _pending(view: _View) -> int:
    """Numbers called for a moment still ahead: they count as waiting (a binary search, no I/O)."""
    return len(view.due) - bisect_right(view.due, time.time()) if view.due else 0


def _recent(number: int) -> bool:
    return (number >> SLOT_BITS) / 1e6 > time.time() - RECENT_S
