"""The blend: a small, inspectable model over the candidates' scores, learned on validation users.

Each candidate's scores are normalised per user (a z-score over the items the user may be shown),
so candidates of any scale add up. Beyond `Z_CLIP` the upper tail grows only logarithmically: an
outlier cannot swamp the other candidates, yet a candidate's order among its top items survives (a
hard clip tied them: EASE put about a dozen items per ML-100K user at the clip, and the blend's
nDCG@20 fell below its parts'). The blend is a weighted sum whose weights may differ
by how much is known about the user — the support-size bucket of the cold-start curve — so the
meta-learned ranker can lead where users are new and an item-item model where they are not. Weights
are found by greedy forward selection from the best single candidate (grid `selection.blend_weights`,
`selection.blend_rounds` passes); a bucket with fewer than `selection.min_bucket_users` validation
users uses the weights learned on all of them. Saved as JSON with the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec_tasks.evaluation.tables import SUPPORT_BUCKETS
from metarec_tasks.params import SelectionParams
from metarec_tasks.selection.metrics import mean_recall

Z_CLIP = 5.0  # z-scores beyond this are compressed (log); -Z_CLIP is the floor, also what excluded items get
FLOOR = -1e5  # scores at or below this are "not scored" (EASE's unpooled items), like excluded ones


def normalise(scores: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Per-user z-scores over the allowed, scored items; everything else at the floor."""
    valid = ~excluded & (scores > FLOOR) & np.isfinite(scores)
    counts = valid.sum(axis=1, keepdims=True).clip(min=1)
    values = np.where(valid, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / counts
    var = (np.where(valid, scores - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / counts
    z = (scores - mean) / np.sqrt(var).clip(min=1e-9)
    return np.where(valid, compress_tail(z), -Z_CLIP).astype(np.float32)


def compress_tail(z: np.ndarray) -> np.ndarray:
    """z within ±Z_CLIP unchanged, floored at -Z_CLIP, and Z_CLIP + log(1 + excess) above: strictly
    increasing, so the order of a candidate's best items is kept."""
    excess = np.maximum(z - Z_CLIP, 0.0)
    return np.where(z > Z_CLIP, Z_CLIP + np.log1p(excess), np.maximum(z, -Z_CLIP))


def bucket_of(support_sizes: np.ndarray) -> np.ndarray:
    """The cold-start curve's bucket (largest edge not above the size; 0 items → the first)."""
    edges = np.asarray(SUPPORT_BUCKETS)
    return edges[np.clip(np.searchsorted(edges, support_sizes, side="right") - 1, 0, len(edges) - 1)]


Weights = dict[str, float]


@dataclass
class Blend:
    overall: Weights
    by_bucket: dict[int, Weights]

    @property
    def parts(self) -> list[str]:
        names = set(self.overall) | {n for w in self.by_bucket.values() for n in w}
        return sorted(n for n in names if any(w.get(n, 0) for w in [self.overall, *self.by_bucket.values()]))

    def weights_for(self, bucket: int) -> Weights:
        return self.by_bucket.get(int(bucket), self.overall)

    def combine(self, z: dict[str, np.ndarray], buckets: np.ndarray) -> np.ndarray:
        """[users, n_items] blended scores from normalised candidate scores."""
        out = np.zeros_like(next(iter(z.values())))
        for bucket in np.unique(buckets):
            rows = buckets == bucket
            for name, weight in self.weights_for(bucket).items():
                if weight:
                    out[rows] += weight * z[name][rows]
        return out

    def to_json(self) -> dict:
        return {"overall": self.overall, "by_support_bucket": {str(b): w for b, w in self.by_bucket.items()}}


def greedy_weights(
    z: dict[str, np.ndarray],
    excluded: np.ndarray,
    relevant: list[set[int]],
    k: int,
    sp: SelectionParams,
) -> Weights:
    """Start from the best single candidate; add (or re-weight) one candidate at a time while
    validation Recall@k improves."""

    def recall(weights: Weights) -> float:
        blended = sum(w * z[name] for name, w in weights.items() if w)
        return mean_recall(blended, excluded, relevant, k)

    singles = {name: recall({name: 1.0}) for name in z}
    start = max(singles, key=lambda n: (np.nan_to_num(singles[n], nan=-1.0), n))
    weights, best = {start: 1.0}, singles[start]
    for _ in range(sp.blend_rounds):
        improved = False
        for name in sorted(z):
            for weight in sp.blend_weights:
                trial = {**weights, name: weight}
                value = recall(trial)
                if value > best + 1e-12:
                    weights, best, improved = trial, value, True
        if not improved:
            break
    return weights


def learn_blend(
    z: dict[str, np.ndarray],
    excluded: np.ndarray,
    relevant: list[set[int]],
    support_sizes: np.ndarray,
    k: int,
    sp: SelectionParams,
) -> Blend:
    """Weights over all validation users, and per support bucket where it has enough users."""
    overall = greedy_weights(z, excluded, relevant, k, sp)
    buckets = bucket_of(support_sizes)
    has_relevant = np.asarray([bool(r) for r in relevant])
    by_bucket = {}
    for bucket in np.unique(buckets):
        rows = (buckets == bucket) & has_relevant
        if rows.sum() >= sp.min_bucket_users:
            idx = np.nonzero(rows)[0]
            sub = {name: values[idx] for name, values in z.items()}
            by_bucket[int(bucket)] = greedy_weights(sub, excluded[idx], [relevant[i] for i in idx], k, sp)
    return Blend(overall, by_bucket)
