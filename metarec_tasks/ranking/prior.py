"""The ranker's item-item prior: an EASE score of the user's support set inside the ranker's score.

    score(u, i) = <user vector, item vector> + item bias + w_u · prior_i(support of u)

Why: the adapted state of a latent ranker is one small user vector — far less than what an
item-item model reads from the same support set (on ML-100K, EASE led the meta rankers from ten
support items upwards). With the prior in the score, the meta-learned part models the residual,
and `w_u` (`head.prior`) is adapted per user with the user vector, so the inner loop learns per user
how far to trust the item-item structure (`ranking.prior: ease`; `none` leaves the score as it was).

- λ and the weight of a low-rated support item are chosen on validation users among
  `selection.ease_lambdas` × `selection.low_rating_weights` by EASE's own Recall@K — the grids and
  the rule of the EASE baseline, so the prior is the tuned baseline, not a second choice;
- a training user's episodes read a *cross-fitted* prior, fitted without that user's fold
  (`ranking.prior_folds`): their own query items never inform their own prior, as at serving;
  validation, holdout and serving users read the prior fitted on every training user;
- the weights are scaled to unit standard deviation of the training users' scores, so
  `ranking.prior_weight` (w's starting value) means the same on every catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from metarec_tasks.ranking import baselines as bl
from metarec_tasks.selection.metrics import mean_recall

log = logging.getLogger(__name__)

PRIOR_KEY = "item_prior"  # the per-row item feature that carries prior_i(support) in a task's rows
SUPPORT_BUCKET = "support_bucket"  # ... and the task's support-size bucket (floor log2 of its size)


def bucket_count(max_support: int) -> int:
    """Support-size buckets 1, 2–3, 4–7, ... up to the one holding `max_support` (larger: the last)."""
    return int(np.floor(np.log2(max(max_support, 1)))) + 1


def support_buckets(sizes: np.ndarray, buckets: int) -> torch.Tensor:
    """[T] bucket of each task's support size (an empty support shares the first bucket)."""
    sizes = np.maximum(np.asarray(sizes), 1)
    return torch.as_tensor(np.minimum(np.floor(np.log2(sizes)), buckets - 1), dtype=torch.long)


@dataclass
class ItemPrior:
    columns: np.ndarray  # catalog rows EASE is fitted on (all of them below `selection.ease_max_items`)
    full: torch.Tensor  # [len(columns), len(columns)] scaled EASE weights of every training user
    folds: list[torch.Tensor]  # the same, each fitted without one fold of the training users
    fold_of: np.ndarray  # [catalog users] a training user's fold, -1 for every other user
    n_items: int
    lam: float
    buckets: int  # support-size buckets of the ranker's gates (`bucket_count`)
    low_weight: float = 0.0  # input weight of a support item the user rated low (`support_matrix`)

    def __post_init__(self) -> None:
        self.pooled_index = np.full(self.n_items, -1, np.int64)  # catalog row → column of `full`
        self.pooled_index[self.columns] = np.arange(len(self.columns))

    def scores(
        self, user_rows: np.ndarray, support: list[np.ndarray], low: list[np.ndarray] | None = None
    ) -> torch.Tensor:
        """[T, n_items] prior scores of each task's support positives, and of its low-rated items at
        `low_weight` (cross-fitted for training users): the sum of their weight rows, O(support x
        items) per task — as a dense product with the few-hot support matrix it was O(items²) and
        most of a 6,000-user train stage."""
        x = torch.zeros(len(support), len(self.columns))
        if low is not None and self.low_weight > 0:
            self._put(x, low, self.low_weight)
        self._put(x, support, 1.0)  # a positive wins over a low rating of the same item
        task, column = x.nonzero(as_tuple=True)
        value = x[task, column][:, None]
        fold = torch.as_tensor(self.fold_of[np.asarray(user_rows, np.int64)])[task]
        pooled_scores = torch.zeros_like(x)
        for f, weights in [(-1, self.full), *enumerate(self.folds)]:  # -1: not a training user
            mine = fold == f
            pooled_scores.index_add_(0, task[mine], weights[column[mine]] * value[mine])
        out = torch.zeros(len(support), self.n_items)
        out[:, torch.as_tensor(self.columns)] = pooled_scores
        return out

    def _put(self, x: torch.Tensor, rows: list[np.ndarray], value: float) -> None:
        """x[task, pooled column of each item of `rows[task]`] = value (items outside the pool: none)."""
        lengths = [len(r) for r in rows]
        task = np.repeat(np.arange(len(rows)), lengths)
        pooled = self.pooled_index[np.concatenate([np.zeros(0, np.int64), *rows]).astype(np.int64)]
        x[torch.as_tensor(task[pooled >= 0]), torch.as_tensor(pooled[pooled >= 0])] = value


def fit_prior(
    train: np.ndarray,
    train_rows: np.ndarray,
    n_users: int,
    val_support: Callable[[float], np.ndarray],
    val_excluded: np.ndarray,
    val_relevant: list[set[int]],
    lambdas: list[float],
    low_weights: list[float],
    max_items: int,
    folds: int,
    k: int,
    seed: int,
    buckets: int,
) -> ItemPrior:
    """The prior from `train` ([training users, n_items] interactions, catalog user rows `train_rows`),
    λ and the low-rating weight chosen by EASE's Recall@k on the validation users' support rows
    (`val_support(low_weight)`: their `support_matrix`)."""
    n_items = train.shape[1]
    columns = bl.pooled_columns(bl.item_counts(train), max_items)
    gram = bl.binary_gram(train, columns)  # read once: each λ and each fold's complement reuse it
    best_lam, best_low, best_recall, full = lambdas[0], low_weights[0], -np.inf, None
    for lam in lambdas:
        ease = bl.EASE.from_gram(gram, columns, lam, n_items)  # one item-item fit held, plus the best
        for low_weight in low_weights:
            recall = mean_recall(ease.scores(val_support(low_weight)), val_excluded, val_relevant, k)
            if np.isfinite(recall) and recall > best_recall:
                best_lam, best_low, best_recall, full = lam, low_weight, recall, ease
    full = full if full is not None else bl.EASE.from_gram(gram, columns, best_lam, n_items)
    binary = (train[:, full.columns] > 0).astype(np.float32)
    scale = float((binary @ full.weights).std()) or 1.0
    del binary
    fold = np.random.default_rng(seed).integers(0, folds, len(train_rows))
    fold_weights = []
    for f in range(folds):  # the fit without fold f: its users' co-occurrences taken out of the Gram
        rest = gram - bl.binary_gram(train[fold == f], columns)
        fold_weights.append(
            torch.as_tensor(bl.EASE.from_gram(rest, columns, best_lam, n_items).weights / scale)
        )
    fold_of = np.full(n_users, -1, np.int64)
    fold_of[train_rows] = fold
    log.info(
        "ranking prior: EASE λ %g, low-rating weight %g chosen on validation users (Recall@%d %.4f), "
        "%d folds, %d items",
        best_lam,
        best_low,
        k,
        best_recall,
        folds,
        len(full.columns),
    )
    return ItemPrior(
        full.columns,
        torch.as_tensor(full.weights / scale),
        fold_weights,
        fold_of,
        train.shape[1],
        best_lam,
        buckets,
        best_low,
    )
