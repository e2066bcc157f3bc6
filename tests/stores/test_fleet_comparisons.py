"""The comparison store on PostgreSQL: the SQLite store's bounds and queries hold, two instances add to the same
counters, and an outage neither loses a queued comparison nor stops the writer."""

from __future__ import annotations

import time

import pytest

from gateway.stores.postgres.comparisons import PgDiffStore
from gateway.stores.postgres.connect import conninfo
from tests.stores.pg_cluster import PASSWORD, Cluster, cluster
from tests.stores.test_diffstore import _record

pytestmark = pytest.mark.timeout(120)



def _store(pg: Cluster, db: str, monkeypatch: pytest.MonkeyPatch, **kw: object) -> PgDiffStore:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return PgDiffStore(conninfo(pg.url(db), None), **kw)  # type: ignore[arg-type]


def test_bounds_and_queries_hold_and_two_instances_share_the_counters(pg: Cluster,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pg.create_database("cmp")
    a = _store(pg, "cmp", monkeypatch, max_samples=30, samples_per_second=10**6)
    b = _store(pg, "cmp", monkeypatch, max_samples=30, samples_per_second=10**6)
    try:
        verdicts = ("match", "mismatch", "ignored", "error")
        for i in range(2000):
            (a if i % 3 else b).put(_record(f"r{i % 2}", verdicts[i % 4], i))
        a.noise_sample("r1", frozenset({"$.generated_at"}))
        b.skip("r0", "body_too_large")
        assert a.flush(30) and b.flush(30)
        db = a.reader()
        try:
            per_kind = sorted(tuple(r) for r in db.execute(
                "SELECT route, verdict, COUNT(*) FROM samples GROUP BY 1, 2"))
            assert per_kind == [("r0", "ignored", 30), ("r0", "match", 30), ("r1", "error", 30),
                                ("r1", "mismatch", 30)]
        finally:
            db.close()
        report = b.report()
        assert report["r1"]["verdicts"] == {"error": 500, "mismatch": 500}
        assert report["r0"]["skipped"] == {"body_too_large": 1}
        assert report["r1"]["fields"][0]["field"] == "$.average"
        assert report["r1"]["compared_latency"]["legacy"]["requests"] == 500   # errors have no latency
        scoped = a.report({"r1": time.time() - 60})   # the per-slot counters answer a report since a moment
        assert scoped["r1"]["verdicts"] == {"error": 500, "mismatch": 500}
        newest = a.list_samples(route="r1", verdict="mismatch", limit=1)[0]
        detail = b.get_sample(newest["id"])
        assert detail is not None and detail["primary"]["body"]["text"].startswith('{"average": 4.33}')
        samples, fields = a.noise_counts()
        assert samples == {"r1": 1} and fields == {"r1": {"$.generated_at": 1}}
        assert a.dropped == 0 and b.dropped == 0
    finally:
        a.close()
        b.close()


def test_an_outage_keeps_what_was_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    with cluster() as pg:
        pg.create_database("cmp")
        store = _store(pg, "cmp", monkeypatch, samples_per_second=10**6)
        try:
            store.put(_record("r", "match", 0))
            assert store.flush(10)
            pg.stop()
            for i in range(1, 200):
                store.put(_record("r", "mismatch", i))
            assert not store.flush(0.5)          # nothing can be committed while the server is down
            time.sleep(0.5)
            pg.start()
            assert store.flush(30)
            assert store.report()["r"]["verdicts"] == {"match": 1, "mismatch": 199}
            assert store.dropped == 0
        finally:
            store.close()
