"""What every extracted service shares: its SQLite store, problem details, the served-by middleware, request
parsing, the shadow marker, and the command line (serve, or ``migrate`` from the legacy database).

The services are deployed on their own, so nothing here imports the monolith. Error bodies are written to read
exactly like the monolith's, because the gateway compares the two byte for byte during shadowing.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from observability.logging import setup_logging
from observability.tracing import db_span, server_span_middleware, setup_service_tracing

T = TypeVar("T")

SHADOW_HEADER = "X-Shadow"
SYNC_HEADER = "X-Strangler-Sync"
IDEMPOTENCY_KEY = "Idempotency-Key"
SERVED_BY_HEADER = "X-Served-By"
PROBLEM_CONTENT_TYPE = "application/problem+json"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

log = logging.getLogger(__name__)


# --- storage --------------------------------------------------------------------------------------------


def connect(path: str | Path) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit) with WAL journaling."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """Open an existing database for reading only; a missing file is an error, never a new empty database."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"legacy database not found: {source}")
    conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


class Database:
    """One SQLite connection per service, used under a lock from worker threads.

    ``asyncio.to_thread`` keeps queries off the event loop and carries contextvars (the current trace span).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """Run ``query(conn, *args)`` in a worker thread."""
        return await asyncio.to_thread(self._read, query, args)

    async def write(self, change: Callable[..., T], *args: Any, dry_run: bool, key: str | None = None) -> T:
        """Run ``change(conn, *args)`` in one transaction; with ``dry_run`` roll it back after it ran in full.
        With an idempotency ``key`` already seen for this change, nothing runs and the first result is returned;
        a new key is recorded with the result in the same transaction, so a retry can never apply it twice."""
        return await asyncio.to_thread(self._write, change, args, dry_run, key)

    def _read(self, query: Callable[..., T], args: tuple[Any, ...]) -> T:
        # The span includes the wait for the lock: that wait is part of what the request spent on the database.
        with db_span(query.__name__, "read"), self._lock:
            return query(self._conn, *args)

    def _write(self, change: Callable[..., T], args: tuple[Any, ...], dry_run: bool, key: str | None) -> T:
        with db_span(change.__name__, "write", dry_run=dry_run), self._lock:
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
                    self._conn.execute("INSERT INTO idempotency (key, change, result) VALUES (?, ?, ?)",
                                       (key, change.__name__, json.dumps(result)))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("ROLLBACK" if dry_run else "COMMIT")
            return result


DB = web.AppKey("db", Database)

# Keys of the writes already applied, with the first answer: a repeated Idempotency-Key changes nothing.
IDEMPOTENCY_SCHEMA = """CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT NOT NULL, change TEXT NOT NULL, result TEXT NOT NULL, PRIMARY KEY (key, change)) WITHOUT ROWID"""



def is_empty(db: str | Path, schema: str) -> bool:
    """True when ``db`` is missing or has no products yet (a first start)."""
    if not Path(db).exists():
        return True
    conn = connect(db)
    try:
        conn.executescript(schema)
        return conn.execute("SELECT COUNT(*) FROM known_products").fetchone()[0] == 0
    finally:
        conn.close()


def legacy_product_ids(source: sqlite3.Connection) -> list[tuple[int]]:
    return [(row[0],) for row in source.execute("SELECT id FROM products ORDER BY id")]


def copy_into(db: str | Path, schema: str, inserts: Sequence[tuple[str, list[tuple[Any, ...]]]]) -> list[int]:
    """Run ``INSERT OR IGNORE`` statements with their rows into ``db`` in one transaction (a migration); return
    how many rows each one added, so a second run reports only what appeared since."""
    target = connect(db)
    try:
        target.executescript(schema)
        target.execute("BEGIN IMMEDIATE")
        try:
            added = []
            for sql, rows in inserts:
                before = target.total_changes
                target.executemany(sql, rows)
                added.append(target.total_changes - before)
        except BaseException:
            target.execute("ROLLBACK")
            raise
        target.execute("COMMIT")
        return added
    finally:
        target.close()

def database_context(
    db_path: str, prepare: Callable[[sqlite3.Connection], None]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that opens the service's database (creating its schema) and closes it at shutdown."""

    def open_database() -> Database:
        conn = connect(db_path)
        prepare(conn)
        conn.execute(IDEMPOTENCY_SCHEMA)
        return Database(conn)

    async def database(app: web.Application) -> AsyncIterator[None]:
        app[DB] = await asyncio.to_thread(open_database)
        yield
        app[DB].close()

    return database


# --- errors ---------------------------------------------------------------------------------------------


class Problem(Exception):
    """An error the client should see as a problem document (RFC 9457 section 3)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Invalid(Problem):
    """Bad client input; the detail starts with the offending field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, f"{field}: {message}")


def problem_response(status: int, detail: str, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    # "about:blank" means the title is just the status phrase (RFC 9457 section 4.2.1).
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    response = web.json_response(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in headers:
        response.headers[name] = value
    return response


def served_by_middleware(service: str) -> Middleware:
    """Render every error as problem+json and stamp ``X-Served-By: service`` on every response."""

    @web.middleware
    async def served_by(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Problem as exc:
            response = problem_response(exc.status, exc.detail)
        except web.HTTPException as exc:
            response = _from_http_exception(request, exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = problem_response(500, "internal error")
        response.headers[SERVED_BY_HEADER] = service
        stamp_write_date(request, response)
        return response

    return served_by


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:
        return web.Response(status=exc.status, headers=exc.headers)
    # Keep headers such as Allow (405) that the status requires; the body is ours.
    kept = [(k, v) for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")]
    if isinstance(exc, web.HTTPNotFound | web.HTTPMethodNotAllowed):
        detail = f"no route for {request.method} {request.path}"
    else:
        detail = exc.reason
    return problem_response(exc.status, detail, kept)


def create_service_app(
    service: str,
    db_path: str,
    prepare: Callable[[sqlite3.Connection], None],
    routes: Iterable[web.RouteDef],
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """The skeleton every extracted service shares; ``middlewares`` run inside the served-by one."""
    # The span middleware is outermost so that it sees the final status of every answer, errors included.
    app = web.Application(middlewares=[server_span_middleware(service), served_by_middleware(service), *middlewares])
    app.cleanup_ctx.append(database_context(db_path, prepare))
    app.router.add_routes([*routes, web.get("/healthz", _healthz(service))])
    return app


def _healthz(service: str) -> Handler:
    async def healthz(request: web.Request) -> web.Response:
        await request.app[DB].read(lambda conn: conn.execute("SELECT 1").fetchone())
        return web.json_response({"status": "ok", "service": service})

    return healthz


# --- request parsing ------------------------------------------------------------------------------------


def is_shadow(request: web.Request) -> bool:
    """The gateway marks shadow copies with ``X-Shadow: 1``; those must not change any data."""
    return request.headers.get(SHADOW_HEADER) == "1"


async def write(request: web.Request, change: Callable[..., T], *args: Any) -> T:
    """Every handler writes through here: a shadow copy runs the change and rolls it back; a write with an
    ``Idempotency-Key`` seen before answers as the first time and changes nothing."""
    return await request.app[DB].write(change, *args, dry_run=is_shadow(request),
                                       key=request.headers.get(IDEMPOTENCY_KEY) or None)


def is_mirrored(request: web.Request) -> bool:
    """A write the gateway mirrored from the other side (``X-Strangler-Sync: 1``): a real write, which this
    service applies and never sends on to anyone (it has no one to send it to)."""
    return request.headers.get(SYNC_HEADER) == "1"


def written_at(request: web.Request) -> str:
    """When the write happened: for a mirrored write, the time the answering side made it (the gateway sends it
    as ``Date``, RFC 9110 §6.6.1), so both sides store the same time; otherwise now."""
    date = request.headers.get("Date") if is_mirrored(request) else None
    value = None
    if date:
        try:
            value = email.utils.parsedate_to_datetime(date).astimezone(UTC).strftime(TIMESTAMP_FORMAT)
        except (TypeError, ValueError):
            pass
    request[WRITTEN_AT] = value = value or timestamp()
    return value


WRITTEN_AT = "strangler.written_at"   # the request's key for the time its write recorded


def stamp_write_date(request: web.Request, response: web.StreamResponse) -> None:
    """A write's answer is dated with the time the write recorded (not the moment the answer left, which can be
    the next second): the gateway passes that ``Date`` on with the mirrored write, so the other side stores the
    same time."""
    value = request.get(WRITTEN_AT)
    if value is not None:
        moment = datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        response.headers["Date"] = email.utils.format_datetime(moment, usegmt=True)


def entity_id(request: web.Request) -> int | None:
    """The id of an entity this write creates, the same on every side that applies it: derived from the write's
    ``Idempotency-Key`` (None without one: the database allocates). The key is hashed into [2^52, 2^53): exact
    in JavaScript, far above any row number, and unlikely to collide (about one chance in 10^4 among a million
    ids; a collision fails the write with 500, it never merges two). Ids are not in creation order: lists are
    ordered by creation time, then id."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    if not key:
        return None
    return id_from_key(key)


def id_from_key(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (1 << 52) + int.from_bytes(digest, "big") % (1 << 52)


def path_id(request: web.Request, name: str) -> int:
    # The route pattern only admits digits, so this cannot fail on a matched route.
    return int(request.match_info[name])


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("body", "invalid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("body", "expected a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, low: int, high: int) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise Invalid(name, "required, a string")
    if not low <= len(value) <= high:
        raise Invalid(name, f"must be {low} to {high} characters")
    return value


def int_field(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    # bool is an int subclass in Python; ``true`` is not a rating.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(name, "required, an integer")
    if not low <= value <= high:
        raise Invalid(name, f"must be between {low} and {high}")
    return value


def timestamp() -> str:
    """Now, as the monolith writes it: ISO 8601, UTC, whole seconds, ``Z`` suffix."""
    return datetime.now(UTC).strftime(TIMESTAMP_FORMAT)


def to_epoch(iso: str) -> int:
    """``2024-03-05T10:15:00Z`` -> Unix seconds (the services store time as integers)."""
    return int(datetime.strptime(iso, TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp())


def to_iso(epoch: int) -> str:
    """Unix seconds -> ``2024-03-05T10:15:00Z``, the monolith's format, so answers compare equal."""
    return datetime.fromtimestamp(epoch, UTC).strftime(TIMESTAMP_FORMAT)


def generated_at() -> str:
    """The time this answer was made, with microseconds: differs on every call."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- command line ---------------------------------------------------------------------------------------


def service_main(
    *,
    service: str,
    default_port: int,
    default_db: str,
    create_app: Callable[[str], web.Application],
    migrate: Callable[[str, str], dict[str, int]],
    is_empty: Callable[[str], bool],
    argv: Sequence[str] | None = None,
) -> None:
    """``python -m extracted.SERVICE [--host H] [--port P] [--db FILE] [--migrate-from LEGACY_DB]`` serves;
    ``python -m extracted.SERVICE migrate --from LEGACY_DB [--db FILE]`` copies the initial data and exits."""
    args = _parser(service, default_port, default_db).parse_args(argv)
    setup_logging(service)
    if args.command == "migrate":
        target = args.target_db or args.db
        copied = _run_migration(service, migrate, args.legacy_db, target)
        print(f"{service}: migrated from {args.legacy_db} into {target}: {_describe(copied)}")
        return
    if args.migrate_from and is_empty(args.db):
        copied = _run_migration(service, migrate, args.migrate_from, args.db)
        log.info("%s: empty database, migrated from %s: %s", service, args.migrate_from, _describe(copied))
    setup_service_tracing(service)
    web.run_app(create_app(args.db), host=args.host, port=args.port)


def _run_migration(
    service: str, migrate: Callable[[str, str], dict[str, int]], legacy_db: str, db: str
) -> dict[str, int]:
    # A wrong path or a file that is not the monolith's database: one line, exit status 1, no traceback.
    try:
        return migrate(legacy_db, db)
    except (OSError, sqlite3.Error) as exc:
        raise SystemExit(f"{service}: migration from {legacy_db} failed: {exc}") from None


def _describe(copied: dict[str, int]) -> str:
    return ", ".join(f"{count} new {table}" for table, count in copied.items())


def _parser(service: str, default_port: int, default_db: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m extracted.{service}", description=f"Run the extracted {service} service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="port (default: %(default)s)")
    parser.add_argument("--db", default=default_db, help="the service's SQLite file (default: %(default)s)")
    parser.add_argument(
        "--migrate-from",
        metavar="LEGACY_DB",
        help="if the service's database is empty, migrate from this first",
    )
    commands = parser.add_subparsers(dest="command")
    migrate = commands.add_parser("migrate", help="copy the initial data from the legacy database and exit")
    migrate.add_argument("--from", dest="legacy_db", required=True, metavar="LEGACY_DB")
    # A separate dest: argparse would let a sub-command default overwrite a --db given before "migrate".
    migrate.add_argument("--db", dest="target_db", help=f"the service's SQLite file (default: {default_db})")
    return parser
