"""stores.postgres: the state of a fleet of gateways in one PostgreSQL database (``store.url``).

    link.py       the one thread that talks to the database: connects (with backoff), applies the migrations,
                  listens for notifications, writes what the instance buffered, re-reads the state; the outage
    schema.py     the versioned migrations, applied at start under an advisory lock
    pins.py       PinStore: rollback pins, canary steps, history (in-memory snapshot + write-behind buffer)
    peers.py      PeerExchange: each instance's per-second guard statistics, shared with the others
    members.py    Membership: the instances sharing the store, their heartbeats
    comparisons.py  ComparisonStore: the SQLite store's writer and queries on PostgreSQL (``Compat``)
    traces.py     TraceStore: the embedded collector's traces, likewise
    connect.py    the URL, the password (PGPASSWORD or a file; never logged)
    open.py       the stores of one gateway process on one link

The request path never waits for the database: it reads snapshots that the link thread replaces. May import
``config``, ``stores`` and ``telemetry.stats``.
"""
