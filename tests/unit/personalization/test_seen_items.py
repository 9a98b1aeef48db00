"""`SeenItems`: each user's interacted items indexed once, a chunk's mask read as a slice — the same
mask as filtering the whole log for the chunk's users (what finetune did per chunk, users² in all)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from metarec_tasks.meta.tasks import Catalog
from metarec_tasks.personalization.rating import SeenItems


def test_a_chunks_seen_mask_is_the_users_own_items_only():
    rng = np.random.default_rng(0)
    items = [f"i{j}" for j in range(12)]
    users = [f"u{j}" for j in range(9)]
    catalog = Catalog({}, {}, [*users, "stranger"], items)
    log = pd.DataFrame(
        {"user_id": rng.choice([*users, "stranger"], 80), "item_id": rng.choice(items, 80)}
    ).sample(frac=1.0, random_state=1)  # in no particular order
    seen = SeenItems(log, users, catalog)
    for start in range(0, len(users), 4):
        chunk = users[start : start + 4]
        expected = torch.zeros((len(chunk), len(items)), dtype=torch.bool)
        for row, user in enumerate(chunk):
            for item in log.loc[log["user_id"] == user, "item_id"]:
                expected[row, items.index(item)] = True
        got = seen.mask(torch.arange(start, start + len(chunk)), len(items))
        assert torch.equal(got, expected)
