"""Opening the gateway's SQLite stores (state, comparisons, traces) the same way everywhere.

Several worker processes open the same files at start-up. Switching a database to WAL mode needs a moment of
exclusive access, and SQLite reports a concurrent switch as "database is locked" at once, without waiting on its
busy timeout; so the switch is retried for a few seconds here instead of failing a worker's start.

The files hold recorded requests and responses (bodies, headers, cookies among them): they are the operator's
alone. The store directory is made 0700 and every database 0600, whatever the umask. SQLite creates a database's
``-wal`` and ``-shm`` files with the database file's own mode, so creating the database 0600 before SQLite opens it
covers them; files left readable by an older version are tightened.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

WAL_RETRY_SECONDS = 10.0
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(directory: Path) -> None:
    """Create the store directory 0700, or tighten it to that."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        os.chmod(directory, DIR_MODE)


def private_file(path: Path, create: bool = True) -> None:
    """Create ``path`` 0600 if it is missing (never truncating it), or tighten it to that."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), FILE_MODE)
    except FileNotFoundError:
        return
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def connect(path: Path, timeout: float = 10.0, before_wal: tuple[str, ...] = ()) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL journal, ``synchronous=NORMAL``, usable from another thread; the file,
    its WAL files and its directory private to the gateway's user. ``before_wal``: pragmas only a new file takes,
    run before the WAL switch writes its first page."""
    private_dir(path.parent)
    private_file(path)
    for suffix in ("-wal", "-shm"):
        private_file(path.with_name(path.name + suffix), create=False)
    db = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=None)
    for pragma in before_wal:
        db.execute(pragma)
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
