"""admission: waiting rooms. A route with an ``admission:`` block lets new visitors in at a fixed rate, first come
first served; the others wait in line with a signed ticket cookie that keeps their place.

    tickets.py   the ticket cookie: what it says, signed with HMAC-SHA256 under the store's rotating keys
    page.py      what a waiting visitor sees: a self-refreshing HTML page or problem+json (position, eta_s)
    room.py      ``Rooms``: the one call the public handler makes for such a route, the lines' settings on
                 reload (and their history), the figures the admin surfaces show
    stats.py     admitted per second and the wait (p50, p99) over the last minute

The line itself (numbers, positions, the rate) lives behind ``gateway.stores.api.AdmissionQueue``, so a shared
store makes it one line for a fleet. May import ``config``, ``errors`` and ``stores``.
"""
