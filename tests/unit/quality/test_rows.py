"""Row facts validation derives before the suite runs: referential integrity against side tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_tasks.quality import rows


@pytest.mark.parametrize("dtype", ["str", object])
def test_known_ids_whatever_the_column_dtype_with_nulls_left_to_their_own_check(dtype):
    side = {"users": pd.Index(["u1", "u2", "u 3"], dtype="str"), "items": pd.Index(["i1", "i2"])}
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(["u1", None, "u9", "u 3", np.nan, "U1"], dtype=dtype),
            "item_id": pd.Series(["i1", "i3", None, "i2", "i2", "i1"], dtype=dtype),
        }
    )
    out = rows.add_known_columns(frame, side)
    assert out[rows.KNOWN["users"]].tolist() == [True, True, False, True, True, False]
    assert out[rows.KNOWN["items"]].tolist() == [True, False, True, True, True, True]


def test_an_undelivered_side_table_checks_nothing():
    frame = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"]})
    out = rows.add_known_columns(frame, {"users": pd.Index([], dtype="str")})
    assert rows.KNOWN["users"] not in out and rows.KNOWN["items"] not in out
