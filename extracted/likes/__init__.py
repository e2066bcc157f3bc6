"""The likes feature, extracted from the monolith into its own service and database."""

from __future__ import annotations

from extracted.likes.app import create_app
from extracted.likes.store import migrate

__all__ = ["create_app", "migrate"]
