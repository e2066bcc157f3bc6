"""stores: the gateway's state, behind small interfaces.

``gateway.stores.api`` declares what each capability needs of its store (pins and history, comparisons, traces,
worker statistics, membership); the SQLite implementations here are the embedded default, and
``stores.postgres`` holds the PostgreSQL ones a fleet of gateways shares. Callers depend on the interfaces, so
neither knows which backend it talks to. May import ``config``, ``telemetry.stats`` and ``observability``.
"""
