"""``python -m extracted.reviews [--port 8101] [--db reviews.db] [--migrate-from legacy.db]`` serves;
``python -m extracted.reviews migrate --from legacy.db --db reviews.db`` copies the initial data."""

from __future__ import annotations

from extracted.common import service_main
from extracted.reviews.app import SERVICE_NAME, create_app
from extracted.reviews.store import is_empty, migrate

if __name__ == "__main__":
    service_main(
        service=SERVICE_NAME,
        default_port=8101,
        default_db="./reviews.db",
        create_app=create_app,
        migrate=migrate,
        is_empty=is_empty,
    )
