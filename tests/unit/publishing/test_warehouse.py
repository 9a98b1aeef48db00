"""Publishing is atomic and idempotent — on SQLite and on PostgreSQL, with the same code."""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from metarec_tasks.publishing.champion import decide
from metarec_tasks.publishing.warehouse import (
    LATEST_VIEW,
    RunRecord,
    attempts,
    champion,
    connect,
    publish_run,
    recommendations,
    runs,
)
from tests.helpers import empty_warehouse

PARTITIONS = text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'recommendations'::regclass")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/warehouse.db"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_warehouse(url)  # the database is shared by the session's PostgreSQL tests
    engine = connect(url)
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        empty_warehouse(url)


def _record(
    run_id: str, day: date, published: bool = True, value: float = 0.7, source: str = "synthetic"
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        logical_date=day,
        status="published" if published else "rejected",
        published=published,
        forced=False,
        gate_passed=published,
        gate_reason="test",
        primary_metric="mae",
        primary_value=value,
        algorithm="maml",
        params={"source": {"kind": source}},
        metrics={"mae": value},
        data_hash="d" * 32,
        model_hash="m" * 32,
    )


def _recs(users: int, k: int, shift: float = 0.0) -> pd.DataFrame:
    rows = [
        {"user_id": f"u{u}", "rank": r + 1, "item_id": f"i{(u + r) % 17}", "score": 5 - r * 0.1 + shift}
        for u in range(users)
        for r in range(k)
    ]
    return pd.DataFrame(rows)


def _rows(engine, run_id):
    with engine.connect() as conn:
        query = (
            select(recommendations)
            .where(recommendations.c.run_id == run_id)
            .order_by(recommendations.c.user_id, recommendations.c.rank)
        )
        return [tuple(r) for r in conn.execute(query)]


def test_republishing_a_run_leaves_exactly_the_same_rows(engine):
    record, recs = _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(30, 5)
    quality = [{"scope": "all", "check_name": "rows_valid", "observed": 10.0, "rows": 11, "passed": True}]
    assert publish_run(engine, record, recs, quality).rows == 150
    first = _rows(engine, record.run_id)
    assert publish_run(engine, record, recs, quality).rows == 150
    assert _rows(engine, record.run_id) == first
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == 1


def test_a_rerun_replaces_its_rows_and_leaves_other_runs_alone(engine):
    publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(10, 3), [])
    publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2)), _recs(20, 3), [])
    publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2)), _recs(5, 2, shift=1.0), [])
    assert len(_rows(engine, "nightly-2026-11-01")) == 30
    rerun = _rows(engine, "nightly-2026-11-02")
    assert len(rerun) == 10 and all(row[-1] > 4 for row in rerun)


def test_a_failed_publish_rolls_back_completely(engine):
    publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(10, 3), [])
    before = _rows(engine, "nightly-2026-11-01")
    broken = pd.concat([_recs(10, 3), _recs(1, 1)])  # a duplicate key fails the insert mid-transaction
    with pytest.raises(IntegrityError):
        publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), broken, [])
    assert _rows(engine, "nightly-2026-11-01") == before


def test_recommendations_with_missing_values_are_refused_before_writing(engine):
    broken = _recs(3, 2)
    broken.loc[1, "item_id"] = None
    with pytest.raises(ValueError, match="missing values"):
        publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), broken, [])
    assert _rows(engine, "nightly-2026-11-01") == []


def test_rejected_runs_are_recorded_without_rows_and_the_view_shows_the_champion(engine):
    publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(4, 2), [])
    publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2), published=False), _recs(4, 2), [])
    assert _rows(engine, "nightly-2026-11-02") == []
    assert champion(engine, "synthetic")["run_id"] == "nightly-2026-11-01"
    with engine.connect() as conn:
        latest = conn.execute(text(f"SELECT DISTINCT run_id FROM {LATEST_VIEW}")).scalars().all()
    assert latest == ["nightly-2026-11-01"]


@pytest.mark.parametrize(
    ("gate_passed", "challenger", "champion_value", "force", "status"),
    [
        (True, 0.70, None, False, "published"),
        (True, 0.70, 0.69, False, "published"),  # within tolerance
        (True, 0.80, 0.69, False, "rejected"),  # much worse than the champion
        (False, 0.70, None, False, "rejected"),
        (False, 0.70, None, True, "forced"),
        (True, 0.80, 0.69, True, "forced"),
    ],
)
def test_gate_decision(gate_passed, challenger, champion_value, force, status):
    current = (
        None
        if champion_value is None
        else {"run_id": "nightly-prev", "primary_metric": "mae", "primary_value": champion_value}
    )
    gate = {"passed": gate_passed, "reason": "baseline check"}
    decided, reason = decide(gate, challenger, current, "mae", tolerance=0.02, force=force)
    assert decided == status and reason


def test_a_rejected_rerun_keeps_the_days_published_rows_and_records_the_attempt(engine):
    day = date(2026, 11, 1)
    publish_run(engine, _record("nightly-2026-11-01", day), _recs(10, 3), [])
    outcome = publish_run(engine, _record("nightly-2026-11-01", day, published=False), _recs(10, 3), [])
    assert outcome.kept_earlier and outcome.rows == 30
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recommendations)).scalar_one() == 30
        record = conn.execute(select(runs)).mappings().one()
        tried = conn.execute(select(attempts.c.status).order_by(attempts.c.attempted_at)).scalars().all()
    assert record["published"] and record["status"] == "published"
    assert tried == ["published", "kept"]
    assert champion(engine, "synthetic")["run_id"] == "nightly-2026-11-01"  # the rerun is judged against it


def test_the_champion_is_of_the_same_source(engine):
    publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1), source="landing"), _recs(4, 2), [])
    publish_run(engine, _record("nightly-2026-11-05", date(2026, 11, 5)), _recs(4, 2), [])  # a newer demo
    assert champion(engine, "landing")["run_id"] == "nightly-2026-11-01"
    assert champion(engine, "synthetic")["run_id"] == "nightly-2026-11-05"
    assert champion(engine, "movielens") is None


def test_ids_with_commas_quotes_and_unicode_round_trip(engine):
    """PostgreSQL's rows go through CSV (COPY): quoting must keep every id exactly."""
    recs = pd.DataFrame(
        {
            "user_id": ['u,"1', "ü ser"],
            "rank": [1, 1],
            "item_id": ['i\n"2', "i,3"],
            "score": [0.1234567891234, 2.0],
        }
    )
    publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), recs, [])
    rows = sorted(_rows(engine, "nightly-2026-11-01"))
    assert sorted(r[1:3] for r in rows) == sorted([('u,"1', 1), ("ü ser", 1)])  # (run_id, user, rank, ...)
    assert {r[3] for r in rows} == {'i\n"2', "i,3"} and 0.1234567891234 in {r[4] for r in rows}


@pytest.mark.postgres
def test_each_run_is_its_own_partition_and_a_rerun_swaps_it(postgres_url):
    """PostgreSQL: a publish attaches a freshly loaded table; a re-publish drops the old one."""
    empty_warehouse(postgres_url)
    engine = connect(postgres_url)
    partition = text("SELECT DISTINCT tableoid::regclass::text FROM recommendations WHERE run_id = :r")
    try:
        publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(10, 3), [])
        publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2)), _recs(5, 3), [])
        with engine.connect() as conn:
            first = conn.execute(partition, {"r": "nightly-2026-11-02"}).scalars().all()
        publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2)), _recs(4, 2, shift=1.0), [])
        with engine.connect() as conn:
            second = conn.execute(partition, {"r": "nightly-2026-11-02"}).scalars().all()
            left = conn.execute(PARTITIONS).scalar_one()
        assert len(first) == len(second) == 1 and first != second and left == 2
        assert (
            len(_rows(engine, "nightly-2026-11-02")) == 8 and len(_rows(engine, "nightly-2026-11-01")) == 30
        )
    finally:
        engine.dispose()
        empty_warehouse(postgres_url)


@pytest.mark.postgres
def test_a_warehouse_from_before_partitioning_is_partitioned_on_connect(postgres_url):
    """An older PostgreSQL warehouse (one plain recommendations table) keeps every row and publishes."""
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, insert

    empty_warehouse(postgres_url)
    old = create_engine(postgres_url)
    with old.begin() as conn:
        runs.create(conn)
        conn.execute(
            text(
                "CREATE TABLE recommendations (run_id VARCHAR(128) REFERENCES runs (run_id) "
                "ON DELETE CASCADE, user_id VARCHAR(128), rank INTEGER, item_id VARCHAR(128) NOT NULL, "
                "score FLOAT NOT NULL, "
                "PRIMARY KEY (run_id, user_id, rank))"
            )
        )
        conn.execute(text(f"CREATE VIEW {LATEST_VIEW} AS SELECT * FROM recommendations"))
        for day in (1, 2):
            record = _record(f"nightly-2026-11-0{day}", date(2026, 11, day))
            conn.execute(
                insert(runs).values(**record.__dict__, recommendation_rows=6, updated_at=datetime.now(UTC))
            )
            rows = _recs(3, 2).assign(run_id=record.run_id).to_dict("records")
            conn.execute(insert(recommendations), rows)
    old.dispose()
    engine = connect(postgres_url)
    try:
        assert len(_rows(engine, "nightly-2026-11-01")) == len(_rows(engine, "nightly-2026-11-02")) == 6
        publish_run(engine, _record("nightly-2026-11-02", date(2026, 11, 2)), _recs(5, 2), [])
        assert (
            len(_rows(engine, "nightly-2026-11-02")) == 10 and len(_rows(engine, "nightly-2026-11-01")) == 6
        )
        with engine.connect() as conn:
            assert conn.execute(PARTITIONS).scalar_one() == 2
            assert conn.execute(text(f"SELECT count(*) FROM {LATEST_VIEW}")).scalar_one() == 10
        connect(postgres_url).dispose()  # partitioned already: connecting again changes nothing
    finally:
        engine.dispose()
        empty_warehouse(postgres_url)


@pytest.mark.postgres
def test_readers_see_the_old_rows_until_commit_and_a_new_run_never_blocks_them(postgres_url):
    """PostgreSQL, mid-publish (the steps of `publish_run`, held open): another connection reads the
    published run at once — no lock wait — and none of the new run's rows until the commit."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from metarec_tasks.publishing.warehouse import (
        attach_recommendations,
        drop_recommendations,
        stage_recommendations,
    )

    empty_warehouse(postgres_url)
    engine = connect(postgres_url)
    counts = text("SELECT run_id, count(*) FROM recommendations GROUP BY run_id ORDER BY run_id")
    try:
        publish_run(engine, _record("nightly-2026-11-01", date(2026, 11, 1)), _recs(10, 3), [])
        new = _record("nightly-2026-11-02", date(2026, 11, 2))
        with engine.connect() as reader, engine.begin() as conn:
            reader.execute(text("SET lock_timeout = '2s'"))  # waiting for the publish would fail
            conn.execute(
                insert(runs).values(**new.__dict__, recommendation_rows=15, updated_at=datetime.now(UTC))
            )
            staged = stage_recommendations(conn, new.run_id, _recs(5, 3))
            drop_recommendations(conn, new.run_id)
            attach_recommendations(conn, new.run_id, staged)
            assert reader.execute(counts).all() == [("nightly-2026-11-01", 30)]
            reader.rollback()
        with engine.connect() as reader:
            assert reader.execute(counts).all() == [("nightly-2026-11-01", 30), ("nightly-2026-11-02", 15)]
    finally:
        engine.dispose()
        empty_warehouse(postgres_url)
