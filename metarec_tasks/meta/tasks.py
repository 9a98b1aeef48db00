"""Tasks as padded tensors: what the vectorized meta-learners consume.

Users have different numbers of interactions, but `vmap` needs equal shapes, so every task's support
and query sets are padded to the batch maximum and carry a mask; losses only count the real rows.
A row's item is its catalog row alone ([tasks, rows], `models/catalog.py`, `ITEM_ROW`): both networks
keep the catalog's encoded item features and read them there, so a batch's memory grows with its rows,
not with rows × feature width (copied per row, the 384-wide text features were most of a task's bytes).
User features are gathered once per task ([tasks, 1, ...]; the models broadcast them over the task's
rows, whose embedding backward would otherwise run once per row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import torch

from metarec_tasks.data.episodes import QUERY, SUPPORT
from metarec_tasks.data.features import Vocabulary, encode_items, encode_users
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.models.catalog import ITEM_ROW
from metarec_tasks.models.rating import Features


@dataclass
class Catalog:
    """Encoded feature rows of every known user and item, addressed by id."""

    users: Features
    items: Features
    user_ids: list[str]
    item_ids: list[str]

    @classmethod
    def build(
        cls,
        vocab: Vocabulary,
        users: pd.DataFrame,
        items: pd.DataFrame,
        text: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> Catalog:
        """`text`: the text features' embeddings per item id (`data/text.py`), if any."""
        users = users.drop_duplicates(USER_KEY).reset_index(drop=True)
        items = items.drop_duplicates(ITEM_KEY).reset_index(drop=True)
        return cls(
            users=encode_users(vocab, users),
            items=encode_items(vocab, items, text),
            user_ids=users[USER_KEY].astype(str).tolist(),
            item_ids=items[ITEM_KEY].astype(str).tolist(),
        )

    def with_missing(self, vocab: Vocabulary, user_ids: list[str], item_ids: list[str]) -> Catalog:
        """Add users/items that have events but no side-table row: they get 'unknown' features."""
        new_users = sorted(set(user_ids) - set(self.user_ids))
        new_items = sorted(set(item_ids) - set(self.item_ids))
        if not new_users and not new_items:
            return self
        blank_users = pd.DataFrame({USER_KEY: new_users})
        blank_items = pd.DataFrame({ITEM_KEY: new_items})
        extra_u = encode_users(vocab, _with_columns(blank_users, vocab.user))
        extra_i = encode_items(vocab, _with_columns(blank_items, vocab.item))
        return Catalog(
            users={k: torch.cat([v, extra_u[k]]) for k, v in self.users.items()},
            items={k: torch.cat([v, extra_i[k]]) for k, v in self.items.items()},
            user_ids=self.user_ids + new_users,
            item_ids=self.item_ids + new_items,
        )

    def __post_init__(self) -> None:
        self._user_index = pd.Index(self.user_ids)
        self._item_index = pd.Index(self.item_ids)

    def user_rows(self, ids) -> np.ndarray:
        """Catalog rows of user ids (compared as strings); an unknown id is a KeyError."""
        return _rows(self._user_index, ids)

    def item_rows(self, ids) -> np.ndarray:
        """Catalog rows of item ids (compared as strings); an unknown id is a KeyError."""
        return _rows(self._item_index, ids)

    def every_item(self, device: torch.device | str) -> Features:
        """Row inputs naming every catalog item in catalog order: what `score_catalog` scores."""
        return {ITEM_ROW: torch.arange(len(self.item_ids), device=device)}


def _rows(index: pd.Index, ids) -> np.ndarray:
    """One hash lookup for all ids — a Python loop over millions of event rows was seconds per call."""
    keys = pd.Index(ids).astype(str) if len(ids) else pd.Index([], dtype=str)
    rows = index.get_indexer(keys).astype(np.int64)
    if (rows < 0).any():
        raise KeyError(keys[np.flatnonzero(rows < 0)[0]])
    return rows


def _with_columns(frame: pd.DataFrame, vocab: dict[str, list[str]]) -> pd.DataFrame:
    for name in vocab:
        frame[name] = pd.Series([None] * len(frame), dtype="string")
    return frame


@dataclass
class InteractionSet:
    """One role (support or query) of a batch of tasks: [tasks, rows, ...] tensors plus a mask."""

    user: Features
    item: Features  # per-row item inputs: `ITEM_ROW` (catalog rows) and, for the ranker, per-row extras
    target: torch.Tensor
    mask: torch.Tensor
    item_rows: torch.Tensor  # catalog rows, -1 where padded


@dataclass
class TaskBatch:
    user_ids: list[str]
    user_rows: torch.Tensor  # [T]
    support: InteractionSet
    query: InteractionSet

    def __len__(self) -> int:
        return len(self.user_ids)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TaskBatch:
        """The same batch with `fn` applied to every tensor (user ids kept)."""

        def each(s: InteractionSet) -> InteractionSet:
            return InteractionSet(**{f.name: _apply(getattr(s, f.name), fn) for f in fields(s)})

        return TaskBatch(list(self.user_ids), fn(self.user_rows), each(self.support), each(self.query))

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch, in one fixed order (two batches of one layout pair up)."""
        out = [self.user_rows]
        for s in (self.support, self.query):
            for f in fields(s):
                value = getattr(s, f.name)
                out += list(value.values()) if isinstance(value, dict) else [value]
        return out

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TaskBatch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TaskBatch:
        """Page-locked host copies, so `to(cuda, non_blocking=True)` overlaps with compute."""
        return self.map(torch.Tensor.pin_memory)


def _apply(value, fn):
    return {k: fn(v) for k, v in value.items()} if isinstance(value, dict) else fn(value)


def padded_rows(frame: pd.DataFrame, users: list[str], catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """[T, max_rows] catalog item rows (-1 padded) and targets, in the order of `users` (unique ids);
    the width is the longest user's in `frame`, whether asked for or not."""
    width = max(int(frame.groupby(USER_KEY, sort=False).size().max()) if len(frame) else 0, 1)
    rows = np.full((len(users), width), -1, dtype=np.int64)
    target = np.zeros((len(users), width), dtype=np.float32)
    if not users:
        return rows, target
    mine, starts = per_user(users, frame)
    counts = np.diff(np.concatenate([[0], starts, [len(mine)]]))
    task = np.repeat(np.arange(len(users)), counts)
    column = np.arange(len(mine)) - np.repeat(np.concatenate([[0], starts]), counts)
    rows[task, column] = catalog.item_rows(mine[ITEM_KEY])
    target[task, column] = mine["value"].to_numpy(dtype=np.float32)
    return rows, target


def per_user(order: list[str], frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of `frame` whose user is in `order` (unique ids), in that user order (a stable sort: a
    user's rows keep theirs), and the offsets where each next user's rows start — `np.split` gives one
    array per user, empty for a user without rows. One sort instead of a DataFrame per user: at
    24,000 users those were most of the ranker's data phase, in time and memory."""
    position = pd.Index(order).get_indexer(frame[USER_KEY].astype(str))
    keep = position >= 0
    sort = np.argsort(position[keep], kind="stable")
    starts = np.cumsum(np.bincount(position[keep], minlength=len(order)))[:-1]
    return frame[keep].iloc[sort], starts


def interaction_set(
    catalog: Catalog, user_rows: np.ndarray, item_rows: np.ndarray, target: np.ndarray
) -> InteractionSet:
    """The rating network's rows: catalog rows only (padding reads row 0, masked out of every loss)."""
    mask = item_rows >= 0
    safe_items = torch.as_tensor(np.where(mask, item_rows, 0))
    users = torch.as_tensor(user_rows)[:, None]  # [T, 1]: the model broadcasts a task's user over its rows
    return InteractionSet(
        user={k: v[users] for k, v in catalog.users.items()},
        item={ITEM_ROW: safe_items},
        target=torch.as_tensor(target),
        mask=torch.as_tensor(mask),
        item_rows=torch.as_tensor(item_rows),
    )


def build_task_batch(tasks: pd.DataFrame, catalog: Catalog, users: list[str] | None = None) -> TaskBatch:
    """Pad the support/query sets of `users` (default: every user in `tasks`) into one batch."""
    users = users if users is not None else list(dict.fromkeys(tasks[USER_KEY].astype(str)))
    user_rows = catalog.user_rows(users)
    sets = {}
    for role in (SUPPORT, QUERY):
        rows, target = padded_rows(tasks[tasks["role"] == role], users, catalog)
        sets[role] = interaction_set(catalog, user_rows, rows, target)
    return TaskBatch(users, torch.as_tensor(user_rows), sets[SUPPORT], sets[QUERY])


def select(batch: TaskBatch, index: torch.Tensor) -> TaskBatch:
    """A sub-batch of tasks (keeps the padding width of the parent batch)."""

    def pick(s: InteractionSet) -> InteractionSet:
        return InteractionSet(
            user={k: v[index] for k, v in s.user.items()},
            item={k: v[index] for k, v in s.item.items()},
            target=s.target[index],
            mask=s.mask[index],
            item_rows=s.item_rows[index],
        )

    ids = [batch.user_ids[i] for i in index.tolist()]
    return TaskBatch(ids, batch.user_rows[index], pick(batch.support), pick(batch.query))


def subsample_support(batch: TaskBatch, generator: torch.Generator) -> TaskBatch:
    """Keep a random 1..n of each task's n support rows (uniform size, random rows).

    Training tasks have long support sets, but the users the model exists for arrive with one to a
    handful of interactions; meta-training on every support size teaches an initialization (and
    learned step sizes) that adapt without overshooting from a single rating.
    """
    mask = batch.support.mask
    n = mask.sum(dim=1).cpu()
    keep_n = torch.minimum((torch.rand(n.shape, generator=generator) * n).long() + 1, n)
    scores = torch.rand(mask.shape, generator=generator).masked_fill(~mask.cpu(), 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    keep = (rank < keep_n[:, None]).to(mask.device) & mask
    return replace(batch, support=replace(batch.support, mask=keep))
