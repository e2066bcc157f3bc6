"""The comparison store on its own: counters, bounds (samples per route and verdict, field and noise tables, age,
body size), field examples kept for the report, exact flush, migration of an older file, and the report."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.stores import diff_queries
from gateway.stores.diff_schema import MAX_FIELDS_PER_ROUTE, MAX_NOISE_FIELDS, SCHEMA, STORED_BODY
from gateway.stores.diffs import DiffStore, Record


def _record(route: str, verdict: str, i: int, fields: tuple[str, ...] = ("$.average",), **kw: object) -> Record:
    diffs = [{"path": f, "field": f, "kind": "changed", "legacy": i, "shadow": i + 1} for f in fields]
    return Record(route=route, method="GET", target=f"/api/products/{i}/reviews", verdict=verdict,
                  primary_backend="legacy", shadow_backend="reviews", primary_status=200, shadow_status=200,
                  primary_ms=2.0 + i % 5, shadow_ms=4.0 + i % 5,
                  differences=diffs if verdict == "mismatch" else [],
                  request_headers=[("Accept", "application/json")], primary_body=b'{"average": 4.33}' * 20,
                  shadow_body=b'{"average": 4.3}' * 20, **kw)  # type: ignore[arg-type]


def _count(db: sqlite3.Connection, sql: str, *args: object) -> int:
    return db.execute(sql, args).fetchone()[0]


def test_samples_stay_within_max_samples_per_route_and_verdict(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db", max_samples=30, samples_per_second=10**6)
    verdicts = ("match", "mismatch", "ignored", "error")
    for i in range(4000):
        store.put(_record(f"r{i % 2}", verdicts[i % 4], i))
    assert store.flush(30)
    db = store.reader()
    try:
        per_kind = [tuple(r) for r in db.execute("SELECT route, verdict, COUNT(*) FROM samples GROUP BY 1, 2")]
        assert sorted(per_kind) == [("r0", "ignored", 30), ("r0", "match", 30), ("r1", "error", 30),
                                    ("r1", "mismatch", 30)]
        # Counters keep the whole story even though samples are capped.
        assert {r[0]: r[1] for r in db.execute("SELECT verdict, n FROM verdicts WHERE route = 'r1'")} == {
            "error": 1000, "mismatch": 1000}
        newest = db.execute("SELECT MAX(id) FROM samples WHERE route = 'r1' AND verdict = 'mismatch'").fetchone()[0]
        assert newest == 3998
    finally:
        db.close()
        store.close()


def test_field_and_noise_tables_are_bounded_and_keep_the_frequent_fields(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db", max_samples=5, samples_per_second=10**6)
    for i in range(MAX_FIELDS_PER_ROUTE + 300):
        # $.average differs every time; every record also brings one field never seen before.
        store.put(_record("r", "mismatch", i, fields=("$.average", f"$.dynamic_{i}")))
        store.noise_sample("r", frozenset({"$.generated_at", f"$.id_{i}"}))
    assert store.flush(30)
    db = store.reader()
    try:
        assert _count(db, "SELECT COUNT(*) FROM fields WHERE route = 'r'") == MAX_FIELDS_PER_ROUTE
        assert _count(db, "SELECT COUNT(*) FROM noise WHERE route = 'r'") == MAX_NOISE_FIELDS
        assert _count(db, "SELECT counted FROM fields WHERE field = '$.average'") == MAX_FIELDS_PER_ROUTE + 300
        assert _count(db, "SELECT differed FROM noise WHERE field = '$.generated_at'") == MAX_FIELDS_PER_ROUTE + 300
        # Samples: the newest 5, plus the latest example of each field still counted (bounded by the field table).
        assert _count(db, "SELECT COUNT(*) FROM samples") <= 5 + MAX_FIELDS_PER_ROUTE
        report = diff_queries.report(db)["r"]
        top = report["fields"][0]
        assert top["field"] == "$.average"
        assert _count(db, "SELECT COUNT(*) FROM samples WHERE id = ?", top["last_sample"]) == 1
    finally:
        db.close()
        store.close()


def test_an_old_fields_example_survives_newer_mismatches_of_other_fields(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db", max_samples=3, samples_per_second=10**6)
    store.put(_record("r", "mismatch", 0, fields=("$.rare",)))
    for i in range(1, 50):
        store.put(_record("r", "mismatch", i, fields=("$.common",)))
    assert store.flush(10)
    db = store.reader()
    try:
        fields = {f["field"]: f for f in diff_queries.report(db)["r"]["fields"]}
        assert diff_queries.get_sample(db, fields["$.rare"]["last_sample"]) is not None
        assert _count(db, "SELECT COUNT(*) FROM samples") == 4  # 3 newest + the rare field's example
    finally:
        db.close()
        store.close()


def test_samples_older_than_max_age_are_deleted(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db", max_age=60.0)
    store.put(_record("r", "mismatch", 1, at=time.time() - 3600))
    store.put(_record("r", "match", 2))
    assert store.flush(10)
    db = store.reader()
    try:
        assert [r[0] for r in db.execute("SELECT verdict FROM samples")] == ["match"]
        assert _count(db, "SELECT SUM(n) FROM verdicts") == 2
    finally:
        db.close()
        store.close()


def test_bodies_are_cut_at_the_stored_cap_and_flagged(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db")
    big = b"x" * (STORED_BODY + 10)
    store.put(Record(route="r", method="POST", target="/", verdict="match", request_body=big, primary_body=big,
                     shadow_body=b"small"))
    assert store.flush(10)
    db = store.reader()
    try:
        (sample,) = diff_queries.list_samples(db)
        detail = diff_queries.get_sample(db, sample["id"])
        assert detail is not None
        assert detail["request"]["body"]["size"] == STORED_BODY and detail["request"]["truncated"]
        assert detail["primary"]["body"]["size"] == STORED_BODY and detail["primary"]["truncated"]
        assert detail["shadow"]["body"]["text"] == "small" and not detail["shadow"]["truncated"]
    finally:
        db.close()
        store.close()


def test_flush_waits_for_every_put_and_the_report_adds_up(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db")
    for i in range(10):
        store.put(_record("r", "mismatch" if i < 3 else "match", i))
        store.skip("r", "queue_full")
    for i in range(10):
        store.noise_sample("r", frozenset({"$.generated_at"} | ({"$.count"} if i == 0 else set())))
    assert store.flush(10)
    assert store.pending == 0
    db = store.reader()
    try:
        rep = diff_queries.report(db)["r"]
    finally:
        db.close()
        store.close()
    assert rep["verdicts"] == {"mismatch": 3, "match": 7}
    assert rep["rates"] == {"mismatch": 30.0, "match": 70.0}
    assert rep["skipped"] == {"queue_full": 10}
    # A field legacy disagreed with itself on once in ten is a candidate, not learned noise.
    assert rep["noise"] == [{"field": "$.generated_at", "differed": 10, "rate": 100.0, "learned": True},
                            {"field": "$.count", "differed": 1, "rate": 10.0, "learned": False}]
    legacy, new = rep["compared_latency"]["legacy"], rep["compared_latency"]["extracted"]
    assert legacy["requests"] == new["requests"] == 10
    assert 4.0 <= legacy["p50_ms"] <= 4.0 * 1.1 and 6.0 <= new["p50_ms"] <= 6.0 * 1.1
    assert 6.0 <= legacy["p99_ms"] <= 6.0 * 1.1 and 8.0 <= new["p99_ms"] <= 8.0 * 1.1


def test_a_store_written_before_request_truncated_existed_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "diffs.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace(",\n    request_truncated INTEGER NOT NULL DEFAULT 0", ""))
    old.close()
    store = DiffStore(path)
    store.put(_record("r", "match", 1))
    assert store.flush(10)
    db = store.reader()
    try:
        (sample,) = diff_queries.list_samples(db)
        assert diff_queries.get_sample(db, sample["id"])["request"]["truncated"] is False  # type: ignore[index]
    finally:
        db.close()
        store.close()


def test_samples_are_rate_limited_but_every_comparison_is_counted(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "diffs.db", samples_per_second=5)
    for i in range(500):
        store.put(_record("busy", "match", i))
    for _ in range(100):
        store.skip("busy", "queue_full")
    assert store.flush(30)
    db = store.reader()
    try:
        (samples,) = db.execute("SELECT COUNT(*) FROM samples WHERE route = 'busy'").fetchone()
        (matches,) = db.execute("SELECT n FROM verdicts WHERE route = 'busy' AND verdict = 'match'").fetchone()
        (skipped,) = db.execute("SELECT n FROM skips WHERE route = 'busy' AND reason = 'queue_full'").fetchone()
    finally:
        db.close()
        store.close()
    assert 5 <= samples <= 15          # a few seconds' worth at most, however fast records arrive
    assert matches == 500 and skipped == 100
