"""The monolith's storage: schema, deterministic seed data, and the one shared SQLite connection.

The seed is generated from a fixed ``random.Random(SEED)`` and fixed timestamps, so two fresh databases are
identical row for row. The extracted services copy their initial data from here (see ``extracted.*.migrate``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from observability.tracing import db_span

T = TypeVar("T")

SEED = 20240305
PRODUCT_COUNT = 500
USER_COUNT = 200
# Seed timestamps count from here; the wall clock never enters the seed.
SEED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0)
);
CREATE TABLE IF NOT EXISTS inventory (
    product_id INTEGER PRIMARY KEY REFERENCES products(id),
    stock      INTEGER NOT NULL CHECK (stock >= 0),
    warehouse  TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id),
    author     TEXT NOT NULL,
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_by_product ON reviews(product_id, id);
CREATE TABLE IF NOT EXISTS likes (
    product_id INTEGER NOT NULL REFERENCES products(id),
    user       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (product_id, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gifts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products(id),
    recipient  TEXT NOT NULL,
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user        TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id         INTEGER NOT NULL REFERENCES orders(id),
    line             INTEGER NOT NULL,
    product_id       INTEGER NOT NULL REFERENCES products(id),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT NOT NULL,
    change     TEXT NOT NULL,
    result     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key, change)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    product_id INTEGER,
    actor      TEXT NOT NULL,
    at         TEXT NOT NULL
);
"""

CATEGORIES: dict[str, tuple[str, ...]] = {
    "kitchen": ("kettle", "skillet", "chef knife", "teapot", "cutting board", "espresso cup"),
    "garden": ("watering can", "pruner", "planter", "hose reel", "bird feeder", "trowel"),
    "books": ("cookbook", "field guide", "atlas", "novel", "sketchbook", "journal"),
    "toys": ("puzzle", "kite", "building set", "wooden train", "board game", "yo-yo"),
    "electronics": ("headphones", "desk lamp", "power bank", "speaker", "keyboard", "webcam"),
    "sports": ("yoga mat", "water bottle", "running cap", "jump rope", "dumbbell", "bike light"),
    "home": ("throw blanket", "candle", "wall clock", "doormat", "vase", "storage box"),
    "outdoor": ("tent", "headlamp", "camp stove", "daypack", "hammock", "compass"),
}
ADJECTIVES = tuple(
    (
        "Classic Compact Sturdy Elegant Everyday Premium Rustic Modern Quiet Bright Nordic Handmade "
        "Travel Deluxe Vintage"
    ).split()
)
MATERIALS = ("oak", "steel", "cotton", "ceramic", "bamboo", "wool", "glass", "copper", "linen", "recycled")
DESCRIPTION_WORDS = tuple(
    (
        "durable light easy clean store carry gift daily use finish handle comfort design season family "
        "warranty fits most spaces made with care tested by our team for years of service soft touch "
        "balanced weight smooth edges natural colours simple assembly replacement parts available on "
        "request"
    ).split()
)
FIRST_NAMES = tuple(
    (
        "Ada Bruno Chloe Dmitri Elena Farid Grace Hiro Ines Jonas Kemi Luca Maya Noor Oskar Priya Quinn "
        "Rosa Sven Tara Uma Victor Wen Yusuf"
    ).split()
)
REVIEW_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("Broke within a week.", "Not as described.", "Would not buy again."),
    2: ("Disappointing quality.", "Works, but barely.", "Arrived scratched."),
    3: ("Does the job.", "Average, nothing special.", "Fine for the price."),
    4: ("Solid and well made.", "Happy with it overall.", "Good value."),
    5: ("Excellent, highly recommended!", "Exactly what I wanted.", "Five stars, would buy again."),
}
WAREHOUSES = ("north", "south", "east")


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix and whole seconds, e.g. ``2024-03-05T10:15:00Z``."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit) with WAL journaling."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    # WAL lets the extracted services' migration read while the monolith writes.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def ensure_database(path: str | Path) -> None:
    """Create the schema and the seed data in ``path`` unless it already holds products."""
    conn = connect(path)
    try:
        prepare(conn)
    finally:
        conn.close()


def prepare(conn: sqlite3.Connection) -> None:
    """Create missing tables, then seed if the catalogue is empty (a first start)."""
    conn.executescript(SCHEMA)
    if conn.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 0:
        conn.execute("BEGIN IMMEDIATE")
        try:
            seed(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def seed(conn: sqlite3.Connection, seed_value: int = SEED) -> None:
    """Insert the demo catalogue. Every value comes from ``random.Random(seed_value)``."""
    rng = random.Random(seed_value)
    users = [f"user-{n:04d}" for n in range(1, USER_COUNT + 1)]
    categories = sorted(CATEGORIES)
    for product_id in range(1, PRODUCT_COUNT + 1):
        category = categories[(product_id - 1) % len(categories)]
        _seed_product(conn, rng, product_id, category)
        _seed_reviews(conn, rng, product_id)
        _seed_likes(conn, rng, product_id, users)
    _seed_events(conn, rng)


def _at(rng: random.Random, max_days: int = 400) -> datetime:
    # Whole minutes keep the timestamps readable (``10:15:00``), like a real review form would store.
    return SEED_EPOCH + timedelta(minutes=rng.randrange(max_days * 24 * 60))


def _seed_product(conn: sqlite3.Connection, rng: random.Random, product_id: int, category: str) -> None:
    noun = rng.choice(CATEGORIES[category])
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {noun}"
    # Long descriptions make the search scan cost what it does on a real catalogue.
    sentences = []
    for _ in range(rng.randint(18, 28)):
        words = rng.choices(DESCRIPTION_WORDS, k=rng.randint(8, 14))
        sentences.append(" ".join(words).capitalize() + ".")
    description = f"The {name.lower()} for your {category}. " + " ".join(sentences)
    price_cents = rng.randint(3, 400) * 100 - rng.choice((1, 5, 51, 100))
    conn.execute(
        "INSERT INTO products (id, name, category, description, price_cents) VALUES (?, ?, ?, ?, ?)",
        (product_id, name, category, description, price_cents),
    )
    # About one product in fifteen is sold out, so the catalogue shows both states.
    stock = 0 if rng.random() < 1 / 15 else rng.randint(1, 250)
    conn.execute(
        "INSERT INTO inventory (product_id, stock, warehouse, updated_at) VALUES (?, ?, ?, ?)",
        (product_id, stock, rng.choice(WAREHOUSES), format_timestamp(_at(rng))),
    )


def _draw_ratings(rng: random.Random, product_id: int) -> list[int]:
    """3 to 8 ratings, skewed positive like real shop reviews.

    The extracted reviews service rounds the average to one decimal where the monolith shows two. For that
    difference to show up in shadow comparisons, most products get an average that one decimal cannot hold
    exactly (e.g. 11/3); every tenth product keeps its first draw, so some averages agree too.
    """
    while True:
        ratings = rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 4), k=rng.randint(3, 8))
        if product_id % 10 == 0 or sum(ratings) * 10 % len(ratings) != 0:
            return ratings


def _seed_reviews(conn: sqlite3.Connection, rng: random.Random, product_id: int) -> None:
    ratings = _draw_ratings(rng, product_id)
    moments = sorted(_at(rng) for _ in ratings)
    for rating, moment in zip(ratings, moments, strict=True):
        author = f"{rng.choice(FIRST_NAMES)} {rng.choice('ABCDEFGHKLMNPRST')}."
        conn.execute(
            "INSERT INTO reviews (product_id, author, rating, text, created_at) VALUES (?, ?, ?, ?, ?)",
            (product_id, author, rating, rng.choice(REVIEW_PHRASES[rating]), format_timestamp(moment)),
        )


def _seed_likes(conn: sqlite3.Connection, rng: random.Random, product_id: int, users: list[str]) -> None:
    for user in rng.sample(users, k=rng.randint(0, 30)):
        conn.execute(
            "INSERT INTO likes (product_id, user, created_at) VALUES (?, ?, ?)",
            (product_id, user, format_timestamp(_at(rng))),
        )


def _seed_events(conn: sqlite3.Connection, rng: random.Random) -> None:
    moments = sorted(_at(rng) for _ in range(40))
    for moment in moments:
        conn.execute(
            "INSERT INTO events (kind, product_id, actor, at) VALUES (?, ?, ?, ?)",
            (
                rng.choice(("price_changed", "restocked", "product_listed")),
                rng.randint(1, PRODUCT_COUNT),
                "catalogue",
                format_timestamp(moment),
            ),
        )


class Database:
    """The monolith's single SQLite connection.

    A sqlite3 connection must not be used by two threads at once, so every call holds ``_lock``. Calls run in
    worker threads (``asyncio.to_thread``) so a slow query, such as the search scan, never blocks the event
    loop; ``to_thread`` also carries contextvars, so a tracing span started by the handler stays current.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Database:
        conn = connect(path)
        prepare(conn)
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """Run ``query(conn, *args)`` in a worker thread."""
        return await asyncio.to_thread(self._read, query, args)

    async def write(self, change: Callable[..., T], *args: Any, dry_run: bool, key: str | None = None) -> T:
        """Run ``change(conn, *args)`` in one transaction and return its result.

        With ``dry_run`` the change runs in full (constraints, ids, follow-up reads) and is then rolled back:
        the caller answers exactly as if it had written, and nothing is kept. An exception always rolls back.
        With an idempotency ``key`` already seen for this change, nothing runs and the first result is returned;
        a new key is recorded with the result in the same transaction, so a retry can never apply it twice.
        """
        return await asyncio.to_thread(self._write, change, args, dry_run, key)

    def _read(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        # The span includes the wait for the lock: that wait is part of what the request spent on the database.
        with db_span(query.__name__, "read"), self._lock:
            return query(self._conn, *args)

    def _write(self, change: Callable[..., T], args: tuple[Any, ...], dry_run: bool, key: str | None) -> T:
        with db_span(change.__name__, "write", dry_run=dry_run), self._lock:
            # IMMEDIATE takes the write lock up front, so a read-then-update (stock check) cannot interleave.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    seen = self._conn.execute("SELECT result FROM idempotency WHERE key = ? AND change = ?",
                                              (key, change.__name__)).fetchone()
                    if seen is not None:
                        self._conn.execute("ROLLBACK")
                        return json.loads(seen[0])  # type: ignore[no-any-return]
                result = change(self._conn, *args)
                if key is not None:
                    self._conn.execute("INSERT INTO idempotency (key, change, result, created_at) "
                                       "VALUES (?, ?, ?, ?)", (key, change.__name__, json.dumps(result),
                                                               format_timestamp(datetime.now(UTC))))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("ROLLBACK" if dry_run else "COMMIT")
            return result
