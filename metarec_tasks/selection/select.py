"""The night's selection: every candidate and the blend on validation users; the best is the
challenger. Nothing here sees a holdout user — holdout users only *report* the choice (evaluate).

The blend is learned on the same validation users it is scored on, so its validation recall flatters
it; it may be the challenger only if it beats the best single candidate by
`selection.blend_min_gain_se` standard errors of their paired per-user difference. Without that rule,
on ML-100K's 46 validation users per fold the blend won folds it then lost on holdout users
(reports/attempts/attempts.md, `cap0_metasgd`: selected 0.476 against EASE 0.485)."""

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
from metarec_tasks.selection.metrics import recall_per_user

log = logging.getLogger(__name__)

BLEND = "blend"


@dataclass
class Selection:
    candidates: dict[str, Candidate]
    blend: Blend | None
    challenger: str
    validation: dict[str, float]  # mean validation Recall@K of every candidate and the blend
    ineligible: frozenset[str] = frozenset()  # scored, but not allowed to be the challenger (the blend)

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
            "not_eligible": sorted(self.ineligible),
        }


def select(
    candidates: list[Candidate], val: EvalUsers, excluded: np.ndarray, k: int, sp: SelectionParams
) -> Selection:
    """Score every candidate on the validation users, learn the blend on them, pick the best."""
    by_name = {c.name: c for c in candidates}
    validation = {c.name: c.validation for c in candidates}
    blend, ineligible = None, frozenset()
    if sp.blend and any(val.relevant):
        z = {c.name: normalise(c.val_scores, excluded) for c in candidates}  # scored while tuning
        sizes = np.asarray([len(items) for items in val.support.items])
        blend = learn_blend(z, excluded, val.relevant, sizes, k, sp)
        blended = recall_per_user(blend.combine(z, bucket_of(sizes)), excluded, val.relevant, k)
        validation[BLEND] = float(np.nanmean(blended)) if np.isfinite(blended).any() else float("nan")
        best_single = max(candidates, key=lambda c: np.nan_to_num(c.validation, nan=-1.0))
        single = recall_per_user(best_single.val_scores, excluded, val.relevant, k)
        if not clear_gain(blended, single, sp.blend_min_gain_se):
            log.info(
                "the blend may not be the challenger: its validation gain over %s is within %g "
                "standard errors (learned on the same users, it flatters itself)",
                best_single.name,
                sp.blend_min_gain_se,
            )
            ineligible = frozenset({BLEND})
    return Selection(
        by_name, blend, best_of(validation, len(val.support), k, ineligible), validation, ineligible
    )


def clear_gain(candidate: np.ndarray, reference: np.ndarray, min_se: float) -> bool:
    """Whether `candidate`'s per-user values beat `reference`'s by more than `min_se` standard errors
    of the paired difference (users with a value in both; fewer than two: no)."""
    diff = (candidate - reference)[np.isfinite(candidate) & np.isfinite(reference)]
    if len(diff) < 2:
        return False
    return bool(diff.mean() > min_se * diff.std(ddof=1) / np.sqrt(len(diff)))


def with_candidate(selection: Selection, candidate: Candidate, users: int, k: int) -> Selection:
    """`selection` and one more candidate, scored on the same `users` validation users, competing for
    challenger but no part of the blend (the student: blended with its own teacher it would only echo it)."""
    validation = {**selection.validation, candidate.name: candidate.validation}
    candidates = {**selection.candidates, candidate.name: candidate}
    challenger = best_of(validation, users, k, selection.ineligible)
    return Selection(candidates, selection.blend, challenger, validation, selection.ineligible)


def best_of(
    validation: dict[str, float], users: int, k: int, ineligible: frozenset[str] = frozenset()
) -> str:
    """The best validation Recall@K (NaN last; ties: the earlier candidate) among those not
    `ineligible`, logged with the table."""
    ranked = sorted(validation, key=lambda n: -np.nan_to_num(validation[n], nan=-1.0))  # stable: list order
    table = ", ".join(
        f"{n} {validation[n]:.4f}" + (" (not eligible)" if n in ineligible else "") for n in ranked
    )
    chosen = next(n for n in ranked if n not in ineligible)
    log.info("selection on %d validation users (Recall@%d): %s -> %s", users, k, table, chosen)
    return chosen
