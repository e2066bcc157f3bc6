"""The legacy shop monolith: products, prices, inventory, reviews, likes, search, events, gifts, orders."""

from __future__ import annotations

from legacy_app.app import create_app

__all__ = ["create_app"]
