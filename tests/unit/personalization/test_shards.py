"""User shards: every user in exactly one shard, in the unsharded chunks and order; the merge reads
only current shard files and computes missing or stale ones."""

from __future__ import annotations

import pandas as pd
import pytest

from metarec_tasks.paths import Workspace
from metarec_tasks.personalization.shards import Shard, gather, read_shard, write_shard


@pytest.mark.parametrize(
    ("users", "chunk", "count"), [(10, 3, 1), (10, 3, 2), (10, 3, 4), (10, 3, 7), (0, 3, 2)]
)
def test_shards_split_the_unsharded_chunks_in_order(users, chunk, count):
    spans = [Shard(i, count).span(users, chunk) for i in range(count)]
    assert [u for span in spans for u in span] == list(
        Shard(0, 1).span(users, chunk)
    )  # one shard: the unsharded loop
    assert all(span.start % chunk == 0 for span in spans if len(span))  # same chunks as unsharded


def test_a_shard_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="shard 2 of 2"):
        Shard(2, 2)


def _rows(shard: Shard) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{shard.index}"], "rank": [1], "item_id": ["i"], "score": [0.5]})


def test_gather_reads_current_shards_and_computes_missing_or_stale_ones(tmp_path):
    ws = Workspace(tmp_path)
    write_shard(ws, Shard(0, 3), _rows(Shard(0, 3)), "now")
    write_shard(ws, Shard(1, 3), _rows(Shard(1, 3)).assign(score=9.0), "yesterday")  # stale
    computed = []
    merged = gather(ws, 3, "now", lambda shard: computed.append(shard.index) or _rows(shard))
    assert computed == [1, 2]
    assert merged["user_id"].tolist() == ["u0", "u1", "u2"] and merged["score"].tolist() == [0.5] * 3
    assert all(read_shard(ws, Shard(i, 3), "now") is not None for i in range(3))  # written for next time
    assert read_shard(ws, Shard(0, 3), "other inputs") is None


def test_a_torn_shard_file_is_computed_again(tmp_path):
    ws = Workspace(tmp_path)
    Shard(0, 1).file(ws).parent.mkdir(parents=True)
    Shard(0, 1).file(ws).write_bytes(b"not parquet")
    assert read_shard(ws, Shard(0, 1), "now") is None
