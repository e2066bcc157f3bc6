"""stores: the gateway's state, behind small interfaces.

``api`` declares what each capability needs of its store (pins and history, comparisons, traces, worker
statistics, the waiting rooms' lines and ticket keys, membership); the SQLite implementations here are the
embedded default, ``postgres`` holds the PostgreSQL ones a fleet of gateways shares, and ``open`` picks them.
Callers depend on the interfaces, so neither knows which backend it talks to. May import ``config`` and
``telemetry.stats`` (the windows worker statistics are exchanged as).
"""
