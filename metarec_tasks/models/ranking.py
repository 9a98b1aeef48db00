"""RankNet: score(user, item) = <user vector, item vector> + item bias.

- item tower (`encoder.*`, shared, never adapted per user): item-ID embedding + categorical and
  multi-hot feature embeddings, summed; a per-item bias (popularity, learned);
- user tower (`mlp.*`): the user's categorical features, embedded, summed, one linear layer;
- `head.user`: a vector added to the user tower's output — the per-user state the inner loop adapts
  (`ranking.meta.adapt` = head), MeLU-style `mlp` also adapts the user tower;
- with the item-item prior (`dims.prior`, `ranking/prior.py`): `head.prior`, the user's weight on
  the EASE score of their support set (a per-row item feature), adapted with the user vector, and
  two gates per support-size bucket (`encoder.prior_gate`, `encoder.bias_gate`, shared): how much
  is known about a user sets the starting mix of popularity (the item bias) and item-item prior:

      score = <user vector, item vector> + (1 + bias_gate[k]) · bias + (head.prior + prior_gate[k]) · prior
Parameter names follow the rating network's prefixes so `model.split_params` and every algorithm of
`metarec_tasks.meta` apply unchanged. `forward(..., part=...)` exposes the two towers so `functional_call`
can compute user vectors per task and the item table once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarec_tasks.data.features import Vocabulary
from metarec_tasks.models.catalog import ITEM_ROW, CatalogRows, gather_rows
from metarec_tasks.models.io import atomic_save, cpu_state, restore, safe_load
from metarec_tasks.models.rating import Features
from metarec_tasks.ranking.prior import PRIOR_KEY, SUPPORT_BUCKET, ItemPrior

RANK_FORMAT = "metarec-rank-model/1"


@dataclass(frozen=True)
class RankDims:
    user_cat_sizes: list[int]
    item_cat_sizes: list[int]
    item_multi_sizes: dict[str, int]
    n_item_ids: int
    dim: int
    prior: bool = False  # score + head.prior x the item-item prior of the support set
    prior_weight: float = 1.0  # head.prior's starting value
    support_buckets: int = 1  # support-size buckets of the prior's gates

    @classmethod
    def from_vocab(
        cls, vocab: Vocabulary, dim: int, prior: ItemPrior | None = None, prior_weight: float = 1.0
    ) -> RankDims:
        """Sizes from the vocabulary; with `prior` (the run's item-item prior), its weight and gates."""
        return cls(
            user_cat_sizes=[len(vocab.user[n]) for n in vocab.user_features("categorical")],
            item_cat_sizes=[len(vocab.item[n]) for n in vocab.item_features("categorical")],
            item_multi_sizes=vocab.item_dense_sizes(),
            n_item_ids=len(vocab.item_ids),
            dim=dim,
            prior=prior is not None,
            prior_weight=prior_weight,
            support_buckets=prior.buckets if prior is not None else 1,
        )


class ItemTower(nn.Module):
    def __init__(self, dims: RankDims, catalog: Features | None = None):
        """`catalog`: the run's encoded item feature rows (`CatalogRows`): task rows name catalog
        rows (`ITEM_ROW`) and read the tower's output there, computed once per call for the catalog
        instead of once per row."""
        super().__init__()
        self.rows = CatalogRows(catalog)
        d = dims.dim
        self.item_id = nn.Embedding(dims.n_item_ids, d)
        self.item_bias = nn.Embedding(dims.n_item_ids, 1)
        self.item_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in dims.item_cat_sizes)
        self.item_multi = nn.ModuleDict(
            {name: nn.Linear(n, d, bias=False) for name, n in dims.item_multi_sizes.items()}
        )
        self.user_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in dims.user_cat_sizes)
        if dims.prior:
            self.bias_gate = nn.Embedding(dims.support_buckets, 1)
            self.prior_gate = nn.Embedding(dims.support_buckets, 1)
            nn.init.zeros_(self.bias_gate.weight)
            nn.init.zeros_(self.prior_gate.weight)
        for emb in [self.item_id, *self.item_embeddings, *self.user_embeddings]:
            nn.init.normal_(emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)

    def items(self, item: Features) -> tuple[torch.Tensor, torch.Tensor]:
        vector = self.item_id(item["item_id"])
        for k, emb in enumerate(self.item_embeddings):
            vector = vector + emb(item["item_cat"][..., k])
        for name, layer in self.item_multi.items():
            vector = vector + layer(item[f"item_multi.{name}"])
        return vector, self.item_bias(item["item_id"]).squeeze(-1)

    def catalog(self) -> Features:
        return self.rows.features()

    def table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([n_items, dim] vectors, [n_items] biases) of every catalog row."""
        return self.items(self.catalog())

    def at_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors, biases) of catalog rows `rows` (any shape)."""
        vectors, bias = self.table()
        return gather_rows(vectors, rows), gather_rows(bias, rows)

    def users(self, user: Features) -> torch.Tensor:
        cat = user["user_cat"]
        out = torch.zeros(
            (*cat.shape[:-1], self.item_id.embedding_dim), dtype=self.item_id.weight.dtype, device=cat.device
        )
        for k, emb in enumerate(self.user_embeddings):
            out = out + emb(cat[..., k])
        return out


class UserHead(nn.Module):
    """The per-user state's starting point (meta-learned); adapted on the support set."""

    def __init__(self, dims: RankDims):
        super().__init__()
        self.user = nn.Parameter(torch.zeros(dims.dim))
        if dims.prior:
            self.prior = nn.Parameter(torch.tensor(float(dims.prior_weight)))


class RankNet(nn.Module):
    def __init__(self, dims: RankDims, catalog: Features | None = None):
        """`catalog`: the encoded item rows task rows point into (`ItemTower`)."""
        super().__init__()
        self.dims = dims
        self.encoder = ItemTower(dims, catalog)
        self.mlp = nn.Linear(dims.dim, dims.dim)
        nn.init.zeros_(self.mlp.weight)
        nn.init.zeros_(self.mlp.bias)
        self.head = UserHead(dims)

    def user_vector(self, user: Features) -> torch.Tensor:
        return self.mlp(self.encoder.users(user)) + self.head.user

    def forward(
        self, user: Features | None, item: Features | None, encoded: Any = None, part: str = "score"
    ) -> Any:
        """Per-row scores of task rows (`item[ITEM_ROW]`: their catalog rows); `part="user"` → user
        vectors, `part="table"` → (item vectors, item biases) of the whole catalog,
        `part="weights"` → (bias scale, prior weight) of a task's support bucket, `part="head_jacobian"`
        → ∂score/∂(each `head.*` parameter) per row, `part="encode"` →
        the item tower's output for these rows, which `encoded` takes back so the inner loop embeds
        a task's rows once, not once per step (the tower is never adapted)."""
        if part == "user":
            return self.user_vector(user)
        if part == "table":
            return self.encoder.table()
        if part == "weights":
            return self.prior_weights(item[SUPPORT_BUCKET])
        if part == "encode" or encoded is None:
            encoded = (
                self.encoder.users(user),
                *self.encoder.at_rows(item[ITEM_ROW]),
                item.get(PRIOR_KEY),
                item.get(SUPPORT_BUCKET),
            )
            if part == "encode":
                return encoded
        user_features, vectors, bias, prior, bucket = encoded
        if part == "head_jacobian":  # the score is linear in the head: its rows' gradient
            return {"head.user": vectors, **({"head.prior": prior} if self.dims.prior else {})}
        user_vector = self.mlp(user_features) + self.head.user
        score = (user_vector * vectors).sum(-1)
        if not self.dims.prior:
            return score + bias
        bias_scale, prior_weight = self.prior_weights(bucket)
        return score + bias_scale * bias + prior_weight * prior

    def prior_weights(self, bucket: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + bias gate, head.prior + prior gate) for support-size buckets `bucket`."""
        enc = self.encoder
        return 1.0 + enc.bias_gate(bucket).squeeze(-1), self.head.prior + enc.prior_gate(bucket).squeeze(-1)


def save_rank_model(path: Path, model: RankNet, metadata: dict[str, Any], algorithm_state: dict) -> None:
    atomic_save(
        {
            "format": RANK_FORMAT,
            "dims": asdict(model.dims),
            "state_dict": cpu_state(model.state_dict()),
            "algorithm_state": cpu_state(algorithm_state),
            "metadata": metadata,
        },
        path,
    )


def load_rank_model(
    path: Path, catalog: Features | None = None, device: torch.device | str = "cpu"
) -> tuple[RankNet, dict, dict]:
    """(model, metadata, algorithm state) reading `catalog`'s item rows (`ItemTower`); anything but
    a RankNet file is refused."""
    payload = safe_load(path, device, RANK_FORMAT, "MetaRec ranking model file")
    model = restore(payload, path, lambda dims: RankNet(RankDims(**dims), catalog), "ranking model file")
    return model.to(device), payload["metadata"], payload.get("algorithm_state", {})
