"""The night's selection: every candidate and the blend on validation users; the best is the
challenger. Nothing here sees a holdout user — holdout users only *report* the choice (evaluate)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarec_tasks.params import SelectionParams
from metarec_tasks.ranking.data import EvalUsers
from metarec_tasks.ranking.episodes import UserItems
from metarec_tasks.selection.candidates import Candidate
from metarec_tasks.selection.fusion import Blend, bucket_of, learn_blend, normalise
from metarec_tasks.selection.metrics import mean_recall

log = logging.getLogger(__name__)

BLEND = "blend"


@dataclass
class Selection:
    candidates: dict[str, Candidate]
    blend: Blend | None
    challenger: str
    validation: dict[str, float]  # mean validation Recall@K of every candidate and the blend

    def kind(self, name: str) -> str:
        return "blend" if name == BLEND else self.candidates[name].kind

    def score(self, name: str, support: UserItems, excluded: np.ndarray) -> np.ndarray:
        """[users, n_items] scores of candidate `name` for these support sets."""
        if name != BLEND:
            return self.candidates[name].score(support)
        assert self.blend is not None
        parts = {n: self.candidates[n].score(support) for n in self.blend.parts}
        return self.blended(parts, support, excluded)

    def score_all(self, support: UserItems, excluded: np.ndarray) -> dict[str, np.ndarray]:
        """Every candidate's scores, each computed once; the blend from those."""
        scores = {name: c.score(support) for name, c in self.candidates.items()}
        if self.blend:
            scores[BLEND] = self.blended(scores, support, excluded)
        return scores

    def blended(self, parts: dict[str, np.ndarray], support: UserItems, excluded: np.ndarray) -> np.ndarray:
        assert self.blend is not None
        z = {n: normalise(parts[n], excluded) for n in self.blend.parts}
        return self.blend.combine(z, bucket_of(np.asarray([len(items) for items in support.items])))

    def producer(self) -> dict[str, Any]:
        """Who makes the published list: what the warehouse records as the run's producer."""
        parts = self.blend.parts if self.challenger == BLEND and self.blend else [self.challenger]
        return {
            "candidate": self.challenger,
            "kind": self.kind(self.challenger),
            "parts": {n: {"kind": self.candidates[n].kind, "knobs": self.candidates[n].knobs} for n in parts},
            "blend": self.blend.to_json() if self.challenger == BLEND and self.blend else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "challenger": self.challenger,
            "kind": self.kind(self.challenger),
            "validation_recall": self.validation,
            "candidates": {
                n: {"kind": c.kind, "knobs": c.knobs, "tried": c.tried} for n, c in self.candidates.items()
            },
            "blend": self.blend.to_json() if self.blend else None,
        }


def select(
    candidates: list[Candidate], val: EvalUsers, excluded: np.ndarray, k: int, sp: SelectionParams
) -> Selection:
    """Score every candidate on the validation users, learn the blend on them, pick the best."""
    by_name = {c.name: c for c in candidates}
    validation = {c.name: c.validation for c in candidates}
    blend = None
    if sp.blend and any(val.relevant):
        z = {c.name: normalise(c.val_scores, excluded) for c in candidates}  # scored while tuning
        sizes = np.asarray([len(items) for items in val.support.items])
        blend = learn_blend(z, excluded, val.relevant, sizes, k, sp)
        validation[BLEND] = mean_recall(blend.combine(z, bucket_of(sizes)), excluded, val.relevant, k)
    return Selection(by_name, blend, best_of(validation, len(val.support), k), validation)


def with_candidate(selection: Selection, candidate: Candidate, users: int, k: int) -> Selection:
    """`selection` and one more candidate, scored on the same `users` validation users, competing for
    challenger but no part of the blend (the student: blended with its own teacher it would only echo it)."""
    validation = {**selection.validation, candidate.name: candidate.validation}
    candidates = {**selection.candidates, candidate.name: candidate}
    return Selection(candidates, selection.blend, best_of(validation, users, k), validation)


def best_of(validation: dict[str, float], users: int, k: int) -> str:
    """The best validation Recall@K (NaN last; ties: the earlier candidate), logged with the table."""
    ranked = sorted(validation, key=lambda n: -np.nan_to_num(validation[n], nan=-1.0))  # stable: list order
    table = ", ".join(f"{n} {validation[n]:.4f}" for n in ranked)
    log.info("selection on %d validation users (Recall@%d): %s -> %s", users, k, table, ranked[0])
    return ranked[0]
