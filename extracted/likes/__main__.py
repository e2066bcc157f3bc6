"""``python -m extracted.likes [--port 8102] [--db likes.db] [--migrate-from legacy.db]`` serves;
``python -m extracted.likes migrate --from legacy.db --db likes.db`` copies the initial data."""

from __future__ import annotations

from extracted.common import service_main
from extracted.likes.app import SERVICE_NAME, create_app
from extracted.likes.store import is_empty, migrate

if __name__ == "__main__":
    service_main(
        service=SERVICE_NAME,
        default_port=8102,
        default_db="./likes.db",
        create_app=create_app,
        migrate=migrate,
        is_empty=is_empty,
    )
