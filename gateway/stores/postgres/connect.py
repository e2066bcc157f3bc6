"""Where the shared store is and how to log in: ``store.url`` or ``STRANGLER_STORE_URL``; the password from
``PGPASSWORD`` (libpq reads it itself) or ``store.password_file``. The password is never part of anything this
module returns for display.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.config.model import StoreSpec

URL_ENV = "STRANGLER_STORE_URL"
# Short enough that an instance starting during an outage falls back to its local copy quickly.
CONNECT_TIMEOUT_S = 2
# A dead server or a cut network must show as an error within seconds, not after the kernel's TCP timeout
# (asyncpg#519 and psycopg's docs describe the silent half-open connection this guards against).
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}


class StoreURLError(ValueError):
    pass


def store_url(spec: StoreSpec) -> str | None:
    """The PostgreSQL URL in effect: the environment overrides routes.yaml; None means SQLite."""
    return os.environ.get(URL_ENV) or spec.url


def conninfo(url: str, password_file: Path | None) -> str:
    """The libpq connection string: the URL, the password from the file if one is named, sane timeouts."""
    extra: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "strangler",
                                **KEEPALIVE}
    if password_file is not None:
        try:
            extra["password"] = password_file.read_text().strip()
        except OSError as exc:
            raise StoreURLError(f"store.password_file {password_file}: {exc.strerror or exc}") from exc
    try:
        return make_conninfo(url, **extra)
    except Exception as exc:  # psycopg.ProgrammingError: the message may quote the URL, so it is not passed on
        raise StoreURLError(f"the store URL {redact(url)} is not a valid PostgreSQL URL") from exc


def redact(url: str) -> str:
    """The URL for logs and the admin API: user, host, port and database; never a password."""
    try:
        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown by its scheme only
        return re.sub(r"//.*", "//...", url)
    user = parts.get("user")
    host, port, db = parts.get("host", ""), parts.get("port"), parts.get("dbname", "")
    return f"postgresql://{user + '@' if user else ''}{host}{':' + str(port) if port else ''}/{db}"
