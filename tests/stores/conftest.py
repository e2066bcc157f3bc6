"""The fleet tests' PostgreSQL: one throwaway cluster per test module, one database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stores.pg_cluster import Cluster, cluster


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


@pytest.fixture
def db_url(pg: Cluster, request: pytest.FixtureRequest) -> str:
    return pg.create_database(request.node.name.lower().replace("[", "_").replace("]", "")[:60])
