"""stores: the gateway's state, behind small interfaces.

``api`` declares what each capability needs of its store (pins and history, comparisons, traces, worker
statistics); the SQLite implementations here are the embedded default and ``open`` picks them. Callers depend on
the interfaces, so another backend (PostgreSQL for a fleet) is added without touching them. May import ``config``
and ``telemetry.stats`` (the windows worker statistics are exchanged as).
"""
