"""The pretrained text encoder, for real: offline, semantic, cached, lazy, and read by the models."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pandas as pd

from metarec_tasks.data.features import build_vocabulary, encode_items
from metarec_tasks.data.text import TEXT_DIM, embed_texts, item_text_table, text_lookup
from metarec_tasks.params import FeatureParams
from tests.helpers import REPO

TITLES = ["The galaxy of the starship", "The planet of the astronaut", "The wedding of the bride"]


def test_the_encoder_loads_offline_and_puts_related_titles_together(tmp_path, caplog):
    cache = tmp_path / "cache.parquet"
    with caplog.at_level(logging.INFO, logger="metarec_tasks.data.text"):
        vectors = embed_texts(TITLES, cache, "cpu", batch_size=2)
    assert vectors.shape == (3, TEXT_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.1  # space with space, not with a wedding
    assert "3 encoded, 0 from the cache" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metarec_tasks.data.text"):
        again = embed_texts([*TITLES, "The heist of the detective"], cache, "cpu", batch_size=2)
    assert "1 encoded, 3 from the cache" in caplog.text  # a nightly run encodes only what is new
    assert np.allclose(again[:3], vectors, atol=1e-6)


def test_importing_the_text_module_does_not_load_the_encoder():
    code = "import sys, metarec_tasks.data.text; print('sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_text_feature_is_a_dense_item_row_and_an_item_without_text_gets_zeros(tmp_path):
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": [TITLES[0], TITLES[2], None]})
    features = FeatureParams.model_validate({"user": [], "item": [{"name": "title", "kind": "text"}]})
    vocab = build_vocabulary(features, pd.DataFrame({"user_id": []}), items, ["a", "b", "c"])
    assert vocab.item_dense_sizes() == {"title": TEXT_DIM}
    table = item_text_table(items, ["title"], tmp_path / "cache.parquet", "cpu", batch_size=8)
    lookup = text_lookup(table.iloc[:2], ["title"])  # "c" has no embedding row
    rows = encode_items(vocab, items, lookup)["item_multi.title"]
    assert rows.shape == (3, TEXT_DIM)
    assert rows[0].norm() > 0.99 and rows[2].abs().sum() == 0
