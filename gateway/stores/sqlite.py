"""Opening the gateway's SQLite stores (state, comparisons, traces) the same way everywhere.

Several worker processes open the same files at start-up. Switching a database to WAL mode needs a moment of
exclusive access, and SQLite reports a concurrent switch as "database is locked" at once, without waiting on its
busy timeout; so the switch is retried for a few seconds here instead of failing a worker's start.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

WAL_RETRY_SECONDS = 10.0


def connect(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL journal, ``synchronous=NORMAL``, usable from another thread."""
    db = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=None)
    deadline = time.monotonic() + WAL_RETRY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")
    return db
