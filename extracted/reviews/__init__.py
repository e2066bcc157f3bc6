"""The reviews feature, extracted from the monolith into its own service and database."""

from __future__ import annotations

from extracted.reviews.app import create_app
from extracted.reviews.store import migrate

__all__ = ["create_app", "migrate"]
