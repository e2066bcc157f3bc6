"""The reviews service's own database, and the migration that fills it from the monolith's.

Its schema is its own: it knows products only by id (to answer 404 like the monolith), and keeps review times
as Unix seconds. Migration keeps the monolith's review ids, so the two answer with the same ids.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from extracted.common import Problem, connect_read_only, copy_into, legacy_product_ids, to_epoch, to_iso
from extracted.common import is_empty as common_is_empty

SCHEMA = """
CREATE TABLE IF NOT EXISTS known_products (
    product_id INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS reviews (
    review_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES known_products(product_id),
    author     TEXT NOT NULL,
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_by_product ON reviews(product_id, review_id);
"""


def prepare(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def is_empty(db: str | Path) -> bool:
    """True when ``db`` is missing or has no products yet (a first start)."""
    return common_is_empty(db, SCHEMA)


def migrate(legacy_db: str | Path, db: str | Path) -> dict[str, int]:
    """Copy product ids and reviews from the monolith's database into ``db``; return how many rows were new.

    Idempotent: rows are keyed by the monolith's ids, so a second run copies only what appeared since.
    """
    source = connect_read_only(legacy_db)
    try:
        product_ids = legacy_product_ids(source)
        reviews = [
            (
                row["id"],
                row["product_id"],
                row["author"],
                row["rating"],
                row["text"],
                to_epoch(row["created_at"]),
            )
            for row in source.execute(
                "SELECT id, product_id, author, rating, text, created_at FROM reviews ORDER BY id"
            )
        ]
    finally:
        source.close()
    new_products, new_reviews = copy_into(db, SCHEMA, [
        ("INSERT OR IGNORE INTO known_products VALUES (?)", product_ids),
        ("INSERT OR IGNORE INTO reviews (review_id, product_id, author, rating, body, created_at)"
         " VALUES (?, ?, ?, ?, ?, ?)", reviews),
    ])
    return {"products": new_products, "reviews": new_reviews}


# --- queries and changes (run in a worker thread, given the connection) -----------------------------------


def require_product(conn: sqlite3.Connection, product_id: int) -> None:
    # Same detail as the monolith: the gateway compares error bodies too.
    if conn.execute("SELECT 1 FROM known_products WHERE product_id = ?", (product_id,)).fetchone() is None:
        raise Problem(404, f"product {product_id} not found")


def reviews_of(conn: sqlite3.Connection, product_id: int) -> dict[str, Any]:
    require_product(conn, product_id)
    rows = conn.execute(
        "SELECT review_id, author, rating, body, created_at FROM reviews WHERE product_id = ? "
        "ORDER BY created_at, review_id",
        (product_id,),
    ).fetchall()
    items = [_review(row) for row in rows]
    ratings = [item["rating"] for item in items]
    # One decimal is what the new product page shows; the monolith's API gave two.
    average = round(sum(ratings) / len(ratings), 1) if ratings else None
    return {"product_id": product_id, "count": len(items), "average": average, "items": items}


def _review(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["review_id"],
        "author": row["author"],
        "rating": row["rating"],
        "text": row["body"],
        "created_at": to_iso(row["created_at"]),
    }


def add_review(
    conn: sqlite3.Connection, product_id: int, author: str, rating: int, text: str, created_at: str,
    review_id: int | None = None,
) -> dict[str, Any]:
    require_product(conn, product_id)
    # review_id None: SQLite allocates the next one (a write without an Idempotency-Key).
    cursor = conn.execute(
        "INSERT INTO reviews (review_id, product_id, author, rating, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (review_id, product_id, author, rating, text, to_epoch(created_at)),
    )
    return {
        "id": cursor.lastrowid,
        "product_id": product_id,
        "author": author,
        "rating": rating,
        "text": text,
        "created_at": created_at,
    }
