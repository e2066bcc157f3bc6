"""The services' tests: a seeded monolith database, made once per run and copied for each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from legacy_app.db import ensure_database


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Seed once; each test gets its own copy so writes never leak between tests.
    path = tmp_path_factory.mktemp("seed") / "legacy.db"
    ensure_database(path)
    return path


@pytest.fixture
def legacy_db(seeded_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "legacy.db"
    shutil.copyfile(seeded_db, path)
    return path
