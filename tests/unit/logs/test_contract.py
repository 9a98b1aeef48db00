"""One schema: README's table, the dtypes and the suite all come from logs/contract.py."""

import re

import pandas as pd

from metarec_tasks.logs.contract import (
    EVENT_COLUMNS,
    contract_markdown,
    empty_events,
    pandas_dtypes,
    side_table_columns,
)
from metarec_tasks.params import load_params
from metarec_tasks.quality.suite import build_side_suite
from tests.landing_util import REPO, clean_landing, ingest_and_validate, landing_params


def test_readme_table_is_the_generated_contract():
    params = load_params(REPO / "params.yaml")
    readme = (REPO / "docs" / "data-contract.md").read_text()
    match = re.search(r"<!-- contract:start[^>]*-->\n(.*?)<!-- contract:end -->", readme, re.S)
    assert match, "README lacks the contract markers"
    assert match.group(1) == contract_markdown(params.active_features, params.validate_), (
        "README's contract table is stale: paste `metarec contract --markdown` between the markers"
    )


def test_side_table_contract_follows_the_feature_params():
    params = load_params(REPO / "params.yaml")
    users = side_table_columns(params.active_features, "users")
    assert [c.name for c in users] == ["user_id", *(f.name for f in params.active_features.user)]
    reasons = {c.reason for c in build_side_suite(users, params.validate_)}
    assert reasons == {"null_user_id", "malformed_user_id"}


def test_dtypes_come_from_the_contract(tmp_path):
    assert {k: str(v) for k, v in empty_events().dtypes.items() if k in pandas_dtypes(EVENT_COLUMNS)} == {
        "user_id": "string",
        "item_id": "string",
        "event_type": "string",
        "value": "float64",
        "timestamp": "string",
    }
    params = landing_params(tmp_path)
    clean_landing(tmp_path, params)
    _, valid, _ = ingest_and_validate(tmp_path, params)
    for name, dtype in pandas_dtypes(EVENT_COLUMNS, validated=True).items():
        if dtype == "string":  # pandas 3 reads Parquet text back as its default string dtype
            assert pd.api.types.is_string_dtype(valid[name]), name
        else:
            assert valid[name].dtype == pd.api.types.pandas_dtype(dtype), name
