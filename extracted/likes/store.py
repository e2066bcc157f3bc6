"""The likes service's own database, and the migration that fills it from the monolith's.

Its schema is its own: products known by id (to answer 404 like the monolith) and one row per (product, user),
with the time as Unix seconds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from extracted.common import Problem, connect_read_only, copy_into, legacy_product_ids, to_epoch
from extracted.common import is_empty as common_is_empty

SCHEMA = """
CREATE TABLE IF NOT EXISTS known_products (
    product_id INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS likes (
    product_id INTEGER NOT NULL REFERENCES known_products(product_id),
    user_id    TEXT NOT NULL,
    liked_at   INTEGER NOT NULL,
    PRIMARY KEY (product_id, user_id)
) WITHOUT ROWID;
"""


def prepare(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def is_empty(db: str | Path) -> bool:
    """True when ``db`` is missing or has no products yet (a first start)."""
    return common_is_empty(db, SCHEMA)


def migrate(legacy_db: str | Path, db: str | Path) -> dict[str, int]:
    """Copy product ids and likes from the monolith's database into ``db``; return how many rows were new.

    Idempotent: a like is keyed by (product, user), so a second run copies only what appeared since.
    """
    source = connect_read_only(legacy_db)
    try:
        product_ids = legacy_product_ids(source)
        likes = [
            (row["product_id"], row["user"], to_epoch(row["created_at"]))
            for row in source.execute(
                "SELECT product_id, user, created_at FROM likes ORDER BY product_id, user"
            )
        ]
    finally:
        source.close()
    new_products, new_likes = copy_into(db, SCHEMA, [
        ("INSERT OR IGNORE INTO known_products VALUES (?)", product_ids),
        ("INSERT OR IGNORE INTO likes (product_id, user_id, liked_at) VALUES (?, ?, ?)", likes),
    ])
    return {"products": new_products, "likes": new_likes}


# --- queries and changes (run in a worker thread, given the connection) -----------------------------------


def like_count(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    # Same detail as the monolith: the gateway compares error bodies too.
    if conn.execute("SELECT 1 FROM known_products WHERE product_id = ?", (product_id,)).fetchone() is None:
        raise Problem(404, f"product {product_id} not found")
    count = conn.execute("SELECT COUNT(*) FROM likes WHERE product_id = ?", (product_id,)).fetchone()[0]
    return {"product_id": product_id, "count": count}


def add_like(conn: sqlite3.Connection, product_id: int, user: str, liked_at: str) -> dict[str, Any]:
    like_count(conn, product_id)
    # The primary key (product_id, user_id) makes a second like by the same user a no-op.
    conn.execute(
        "INSERT OR IGNORE INTO likes (product_id, user_id, liked_at) VALUES (?, ?, ?)",
        (product_id, user, to_epoch(liked_at)),
    )
    return like_count(conn, product_id)
