"""The recommender network, MeLU-style: feature embeddings → MLP → rating.

The network is an ordinary `nn.Module`, but every algorithm calls it functionally
(`torch.func.functional_call` with an explicit parameter dict), so adapted per-user weights are just
tensors with a leading task dimension and never mutate the module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarec_tasks.data.features import Vocabulary
from metarec_tasks.models.catalog import ITEM_ROW, CatalogRows, gather_rows
from metarec_tasks.params import AdaptGroup, ModelParams

MODEL_FORMAT = "metarec-model/2"  # 2: encoder submodule, learned algorithm state

# Parameter-name prefixes adapted per user in the inner loop (MeLU adapts the MLP only; ANIL the head).
ADAPT_PREFIXES: dict[str, tuple[str, ...]] = {
    "mlp": ("mlp.", "head."),
    "head": ("head.",),
    "all": ("",),
}

Features = dict[str, torch.Tensor]
ParamDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class NetDims:
    """Sizes that fix the network's shape; saved with the weights so a model file is self-describing."""

    user_cat_sizes: list[int]
    item_cat_sizes: list[int]
    item_multi_sizes: dict[str, int]
    n_item_ids: int
    embedding_dim: int
    hidden: list[int]
    item_id_embedding: bool
    rating_offset: float = 0.0

    @classmethod
    def from_vocab(cls, vocab: Vocabulary, mp: ModelParams, rating_offset: float) -> NetDims:
        return cls(
            user_cat_sizes=[len(vocab.user[n]) for n in vocab.user_features("categorical")],
            item_cat_sizes=[len(vocab.item[n]) for n in vocab.item_features("categorical")],
            item_multi_sizes=vocab.item_dense_sizes(),
            n_item_ids=len(vocab.item_ids),
            embedding_dim=mp.embedding_dim,
            hidden=list(mp.hidden),
            item_id_embedding=mp.item_id_embedding,
            rating_offset=rating_offset,
        )

    def to_json(self) -> dict:
        return asdict(self)


class FeatureEncoder(nn.Module):
    """Feature embeddings → one input vector per (user, item) row.

    A submodule of its own so the inner loop can run it once per task and reuse the result for every
    adaptation step when only the MLP/head adapt (`meta.adapt` = mlp or head). Task rows carry only
    their catalog row (`ITEM_ROW`) and the encoder reads the item features it keeps (`CatalogRows`),
    so no task batch holds a copy of an item's features per row.
    """

    def __init__(self, dims: NetDims, catalog: Features | None = None):
        super().__init__()
        d = dims.embedding_dim
        self.rows = CatalogRows(catalog)
        self.user_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in dims.user_cat_sizes)
        self.item_embeddings = nn.ModuleList(nn.Embedding(n, d) for n in dims.item_cat_sizes)
        self.item_multi = nn.ModuleDict(
            {name: nn.Linear(n, d, bias=False) for name, n in dims.item_multi_sizes.items()}
        )
        self.item_id = nn.Embedding(dims.n_item_ids, d) if dims.item_id_embedding else None
        self.width = d * (
            len(dims.user_cat_sizes)
            + len(dims.item_cat_sizes)
            + len(dims.item_multi_sizes)
            + int(dims.item_id_embedding)
        )

    def items(self, item: Features) -> torch.Tensor:
        """[..., item part] of encoded item features (`encode_items`' keys): the inputs' item half."""
        parts = [emb(item["item_cat"][..., k]) for k, emb in enumerate(self.item_embeddings)]
        parts += [layer(item[f"item_multi.{name}"]) for name, layer in self.item_multi.items()]
        if self.item_id is not None:
            parts.append(self.item_id(item["item_id"]))
        if not parts:  # no item feature, no item-id embedding: the inputs are the user's alone
            return torch.zeros((*item["item_id"].shape, 0), device=item["item_id"].device)
        return torch.cat(parts, dim=-1)

    def at_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """[..., item part] of catalog rows `rows`: the whole catalog encoded once and read at them
        when a call asks for as many rows as the catalog holds, else only these rows' features,
        read from the catalog for this call. Under `vmap` a call is one task's rows, far fewer than
        the catalog's, and with `meta.adapt` all every task has its own encoder: a catalog table
        per task would encode every item per task and step."""
        catalog = self.rows.features()
        if rows.numel() >= len(catalog["item_id"]):
            return gather_rows(self.items(catalog), rows)
        return self.items({name: values[rows] for name, values in catalog.items()})

    def forward(self, user: Features, item: Features) -> torch.Tensor:
        """[..., rows, width] inputs of the catalog rows `item[ITEM_ROW]`; `user` may hold one row per
        task ([..., 1, k]): broadcast over the task's rows, its embeddings' backward is one row's, not
        every row's."""
        rows = item[ITEM_ROW]
        user_cat = user["user_cat"]
        parts = [emb(user_cat[..., k]).expand(*rows.shape, -1) for k, emb in enumerate(self.user_embeddings)]
        return torch.cat([*parts, self.at_rows(rows)], dim=-1)


class RatingNet(nn.Module):
    def __init__(self, dims: NetDims, catalog: Features | None = None):
        """`catalog`: the run's encoded item feature rows task rows point into (`FeatureEncoder`)."""
        super().__init__()
        self.dims = dims
        self.encoder = FeatureEncoder(dims, catalog)
        n_inputs = self.encoder.width
        layers: list[nn.Module] = []
        for width in dims.hidden:
            layers += [nn.Linear(n_inputs, width), nn.ReLU()]
            n_inputs = width
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(n_inputs, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for emb in [*self.encoder.user_embeddings, *self.encoder.item_embeddings]:
            nn.init.normal_(emb.weight, std=0.1)
        if self.encoder.item_id is not None:
            nn.init.normal_(self.encoder.item_id.weight, std=0.01)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, self.dims.rating_offset)

    def forward(
        self,
        user: Features | None,
        item: Features | None,
        encoded: torch.Tensor | None = None,
        part: str = "score",
    ) -> torch.Tensor:
        """Predicted rating for each (user, item) row (`item[ITEM_ROW]`: their catalog rows); inputs
        share their leading shape.

        `part="encode"` returns the encoder's output for these rows; passed back as `encoded` it skips
        the embeddings: the inner loop does so when the encoder is not adapted, so embeddings are
        looked up once per task, not once per step. `part="head_jacobian"` returns ∂rating/∂(each
        `head.*` parameter) per row (the closed-form ridge inner loop's Jacobian).
        """
        if part == "encode":
            return self.encoder(user, item)
        if encoded is None:
            encoded = self.encoder(user, item)
        hidden = self.mlp(encoded)
        if part == "head_jacobian":  # the score is linear in the head: its rows' gradient
            return {"head.weight": hidden.unsqueeze(-2), "head.bias": torch.ones_like(hidden[..., :1])}
        return self.head(hidden).squeeze(-1)


ENCODER_PREFIX = "encoder."


def split_params(model: nn.Module, adapt: AdaptGroup) -> tuple[ParamDict, ParamDict]:
    """(adapted, shared) parameter dicts: the inner loop changes only the first."""
    prefixes = ADAPT_PREFIXES[adapt]
    adapted, shared = {}, {}
    for name, value in model.named_parameters():
        (adapted if name.startswith(prefixes) else shared)[name] = value
    return adapted, shared


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real (unpadded) rows of a task."""
    weights = mask.to(prediction.dtype)
    return ((prediction - target) ** 2 * weights).sum() / weights.sum().clamp_min(1.0)


def mse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction, target)
