"""The compact data-quality summary lands in the warehouse's data_quality table."""

from datetime import date

import pandas as pd
from sqlalchemy import select

from metarec_tasks.publishing.records import quality_rows
from metarec_tasks.publishing.warehouse import RunRecord, connect, data_quality, publish_run
from tests.landing_util import clean_landing, ingest_and_validate, landing_params


def test_quality_summary_is_written_per_check_and_reason(tmp_path):
    params = landing_params(tmp_path, **{"synthetic.bad_row_share": 0.02})
    clean_landing(tmp_path, params)
    report, _, _ = ingest_and_validate(tmp_path, params)
    rows = quality_rows(report.to_json())

    engine = connect(f"sqlite:///{tmp_path / 'wh.db'}")
    record = RunRecord(
        run_id="nightly-test",
        logical_date=date(2026, 10, 20),
        status="rejected",
        published=False,
        forced=False,
        gate_passed=False,
        gate_reason="test",
        primary_metric="mae",
        primary_value=None,
        algorithm="maml",
        params={},
        metrics={},
        data_hash=None,
        model_hash=None,
    )
    publish_run(engine, record, pd.DataFrame(columns=["user_id", "rank", "item_id", "score"]), rows)
    with engine.connect() as conn:
        stored = pd.DataFrame(conn.execute(select(data_quality)).mappings().all())
    keyed = stored.set_index(["scope", "check_name"])
    assert keyed.loc[("all", "rows_valid"), "observed"] == report.rows_valid
    for reason, count in report.reasons.items():
        assert keyed.loc[("all", f"quarantined:{reason}"), "observed"] == count
    share = keyed.loc[("date=2026-10-20/events.csv", "max_bad_row_share")]
    assert 0 < share["observed"] <= params.validate_.max_bad_row_share and share["passed"]
    assert ("date=2026-10-20", "new_user_share") in keyed.index
