"""The rating model's task rows carry only their catalog row; the network reads the catalog it keeps.

The layout before gathered every row's own copy of its item's features into the batch; the network
must predict (and learn) exactly what it did then, and a batch's bytes must no longer grow with the
item features' width.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from metarec_tasks.meta.tasks import Catalog, TaskBatch, build_task_batch, select
from metarec_tasks.models.catalog import ITEM_ROW
from metarec_tasks.models.rating import Features, NetDims, RatingNet, masked_mse

N_USERS, N_ITEMS, TAGS = 6, 20, 5


def catalog_with_text(width: int) -> Catalog:
    """Encoded users and items as `Catalog.build` lays them out, with a `width`-wide text feature."""
    generator = torch.Generator().manual_seed(0)
    return Catalog(
        users={"user_cat": torch.randint(0, 3, (N_USERS, 2), generator=generator)},
        items={
            "item_cat": torch.randint(0, 4, (N_ITEMS, 1), generator=generator),
            "item_multi.tags": torch.rand((N_ITEMS, TAGS), generator=generator),
            "item_multi.title": torch.randn((N_ITEMS, width), generator=generator),
            "item_id": torch.arange(N_ITEMS),
        },
        user_ids=[f"u{u}" for u in range(N_USERS)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
    )


def tasks_frame() -> pd.DataFrame:
    """Ragged tasks: user u has 2 + u support rows and 1 + u % 3 query rows."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        items = rng.choice(N_ITEMS, 2 + u + 1 + u % 3, replace=False)
        for k, item in enumerate(items):
            role = "support" if k < 2 + u else "query"
            rows.append((f"u{u}", f"i{item}", float(rng.integers(1, 6)), role))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "value", "role"])


def network(catalog: Catalog) -> RatingNet:
    dims = NetDims(
        user_cat_sizes=[3, 3],
        item_cat_sizes=[4],
        item_multi_sizes={"tags": TAGS, "title": catalog.items["item_multi.title"].shape[1]},
        n_item_ids=N_ITEMS,
        embedding_dim=3,
        hidden=[8],
        item_id_embedding=True,
        rating_offset=3.5,
    )
    torch.manual_seed(0)
    model = RatingNet(dims, catalog.items)
    torch.nn.init.normal_(model.head.weight)  # a head that is not zero, so every weight matters
    return model


def gathered_prediction(model: RatingNet, user: Features, rows: torch.Tensor, catalog: Catalog):
    """The layout before: each row's own copy of its item's features, the encoder run per row."""
    item = {k: v[rows] for k, v in catalog.items.items()}
    enc = model.encoder
    parts = [
        emb(user["user_cat"][..., k]).expand(*rows.shape, -1) for k, emb in enumerate(enc.user_embeddings)
    ]
    parts += [emb(item["item_cat"][..., k]) for k, emb in enumerate(enc.item_embeddings)]
    parts += [layer(item[f"item_multi.{name}"]) for name, layer in enc.item_multi.items()]
    parts.append(enc.item_id(item["item_id"]))
    return model.head(model.mlp(torch.cat(parts, dim=-1))).squeeze(-1)


def test_catalog_rows_predict_and_learn_what_gathered_features_did():
    """Both ways the encoder reads the catalog: a whole-batch call (at least as many rows as the
    catalog: its table read at the rows) and one task's rows (fewer: those rows' features)."""
    catalog = catalog_with_text(16)
    batch = build_task_batch(tasks_frame(), catalog)
    model = network(catalog)
    weights = list(model.parameters())
    one_task = select(batch, torch.tensor([N_USERS - 1])).support
    assert batch.support.mask.numel() >= N_ITEMS > one_task.mask.numel()
    for rows in (batch.support, batch.query, one_task):
        assert set(rows.item) == {ITEM_ROW}
        expected = gathered_prediction(model, rows.user, rows.item[ITEM_ROW], catalog)
        predicted = model(rows.user, rows.item)
        torch.testing.assert_close(predicted, expected)
        # the same gradients too: adaptation and meta-training follow the same path
        old = torch.autograd.grad(masked_mse(expected, rows.target, rows.mask), weights)
        new = torch.autograd.grad(masked_mse(predicted, rows.target, rows.mask), weights)
        for a, b in zip(new, old, strict=True):
            torch.testing.assert_close(a, b)


def test_a_task_batch_holds_no_item_features_so_its_bytes_do_not_grow_with_their_width():
    tasks = tasks_frame()
    narrow = build_task_batch(tasks, catalog_with_text(4))
    wide = build_task_batch(tasks, catalog_with_text(384))
    assert held_bytes(wide) == held_bytes(narrow)
    for rows in (wide.support, wide.query):
        assert set(rows.item) == {ITEM_ROW} and rows.item[ITEM_ROW].shape == rows.mask.shape
        assert rows.user["user_cat"].shape[1] == 1  # one user row per task


def held_bytes(batch: TaskBatch) -> int:
    tensors = [batch.user_rows]
    for rows in (batch.support, batch.query):
        tensors += [*rows.user.values(), *rows.item.values(), rows.target, rows.mask, rows.item_rows]
    return sum(t.untyped_storage().nbytes() for t in tensors)
