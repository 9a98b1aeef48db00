"""Feature vocabularies and encoding: side-table strings → the integer/multi-hot tensors the model eats.

Index 0 of every vocabulary is "unknown", so a user or item the model has never seen (the cold-start
case) still gets a well-defined input instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec_tasks.data.text import TEXT_DIM
from metarec_tasks.params import FeatureParams, FeatureSpec

UNKNOWN = "<unk>"
MULTI_SEPARATOR = "|"


@dataclass(frozen=True)
class Vocabulary:
    """Everything needed to encode entities the same way in train, finetune and serving."""

    user: dict[str, list[str]]
    item: dict[str, list[str]]
    kinds: dict[str, str]  # "user.age_bucket" -> "categorical"
    item_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        return cls(user=data["user"], item=data["item"], kinds=data["kinds"], item_ids=data["item_ids"])

    def user_features(self, kind: str) -> list[str]:
        return [name for name in self.user if self.kinds[f"user.{name}"] == kind]

    def item_features(self, kind: str) -> list[str]:
        return [name for name in self.item if self.kinds[f"item.{name}"] == kind]

    def item_dense_sizes(self) -> dict[str, int]:
        """Item features the models read as a dense row (`item_multi.<name>`) and the row's size:
        multi-hot tags (one column per tag) and text (its frozen embedding, `data/text.py`)."""
        sizes = {n: len(self.item[n]) for n in self.item_features("multi_hot")}
        return sizes | {n: TEXT_DIM for n in self.item_features("text")}


def build_vocabulary(
    features: FeatureParams, users: pd.DataFrame, items: pd.DataFrame, known_item_ids: list[str]
) -> Vocabulary:
    kinds: dict[str, str] = {}
    user_vocab = {}
    for spec in features.user:
        kinds[f"user.{spec.name}"] = spec.kind
        user_vocab[spec.name] = _values(users, spec)
    item_vocab = {}
    for spec in features.item:
        kinds[f"item.{spec.name}"] = spec.kind
        item_vocab[spec.name] = _values(items, spec)
    return Vocabulary(user_vocab, item_vocab, kinds, [UNKNOWN, *sorted(set(known_item_ids))])


def _values(table: pd.DataFrame, spec: FeatureSpec) -> list[str]:
    if spec.name not in table:
        raise KeyError(f"feature {spec.name!r} declared in params.yaml is not a side-table column")
    if spec.kind == "text":
        return []  # no vocabulary: the text is embedded (`data/text.py`)
    column = table[spec.name].dropna().astype(str)
    if spec.kind == "multi_hot":
        tokens = {t for joined in column for t in joined.split(MULTI_SEPARATOR) if t}
        return [UNKNOWN, *sorted(tokens)]
    return [UNKNOWN, *sorted(set(column))]


def encode_users(vocab: Vocabulary, users: pd.DataFrame) -> dict[str, torch.Tensor]:
    """`user_cat`: [n_users, n_categorical] long; rows follow `users`."""
    return {"user_cat": _categorical(users, vocab.user, vocab.user_features("categorical"))}


def encode_items(
    vocab: Vocabulary, items: pd.DataFrame, text: dict[str, dict[str, np.ndarray]] | None = None
) -> dict[str, torch.Tensor]:
    """`item_cat` [n, k] long, `item_id` [n] long, one `item_multi.<name>` [n, |vocab|] float per
    multi-hot feature and one [n, TEXT_DIM] per text feature (`text`: its embedding per item id;
    an item without one gets zeros)."""
    out = {"item_cat": _categorical(items, vocab.item, vocab.item_features("categorical"))}
    index = {item_id: i for i, item_id in enumerate(vocab.item_ids)}
    out["item_id"] = torch.as_tensor([index.get(str(i), 0) for i in items["item_id"]], dtype=torch.long)
    for name in vocab.item_features("multi_hot"):
        lookup = {token: i for i, token in enumerate(vocab.item[name])}
        hot = np.zeros((len(items), len(lookup)), dtype=np.float32)
        for row, joined in enumerate(items[name].fillna("").astype(str)):
            tokens = [t for t in joined.split(MULTI_SEPARATOR) if t] or [UNKNOWN]
            for token in tokens:
                hot[row, lookup.get(token, 0)] = 1.0
        hot /= np.maximum(hot.sum(axis=1, keepdims=True), 1.0)  # mean-pool the tag embeddings
        out[f"item_multi.{name}"] = torch.from_numpy(hot)
    for name in vocab.item_features("text"):
        vectors = (text or {}).get(name, {})
        dense = np.zeros((len(items), TEXT_DIM), dtype=np.float32)
        for row, item_id in enumerate(items["item_id"].astype(str)):
            if item_id in vectors:
                dense[row] = vectors[item_id]
        out[f"item_multi.{name}"] = torch.from_numpy(dense)
    return out


def _categorical(table: pd.DataFrame, vocab: dict[str, list[str]], names: list[str]) -> torch.Tensor:
    columns = []
    for name in names:
        lookup = {value: i for i, value in enumerate(vocab[name])}
        values = table[name].astype("string").fillna(UNKNOWN) if name in table else [UNKNOWN] * len(table)
        columns.append([lookup.get(str(v), 0) for v in values])
    if not columns:
        return torch.zeros((len(table), 0), dtype=torch.long)
    return torch.as_tensor(np.asarray(columns).T, dtype=torch.long)
