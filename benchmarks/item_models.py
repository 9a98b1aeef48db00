"""Is there an item model beyond EASE on the ML-100K top-K protocol? (issues 13 and 14, a probe.)

Every fused, selected or meta-learned ranker of `benchmarks/ml100k_topk.py` lands within ±0.011 of
EASE's holdout Recall@20, and the fusion ceiling (`benchmarks/fusion_ceiling.py`, read on the test
users) is +0.008 to +0.011 across protocol seeds. This probe asks whether the item-item side itself
has headroom, on the same protocol, folds and users, each model's knobs chosen on the fold's
validation users and the choice scored on its test users:

- `ease`: the pipeline's baseline (λ × low-rating input weight);
- `ease_like`: EASE plus β × each item's smoothed log like-rate (rated ≥ threshold / rated): the
  target is a *liked* query item, EASE models a *watched* one;
- `ease_dropout`: EASE with a ridge of λ + κ × each item's own count (the closed form of EASE trained
  on inputs with dropout, Steck 2020's denoising view): popular items' self-weights shrunk more;
- `ease_meta_ridge`: from `ease_dropout`'s choice, a ridge per item meta-learned through EASE's
  closed form: the inner loop is the exact fit on the training users outside a cross-fitting fold,
  the outer loss the query loss of that fold's users' episodes (as `ease_episodic`'s), Adam, the
  best step by validation recall (a closed-form inner loop, as R2-D2 learns its λ);
- `ease_watch_to_like`: an asymmetric EASE, every training rating as input, the liked ones as target;
- `rp3beta`: the random-walk item-item model (Paudel et al. 2017), α × β;
- `ease_episodic`: EASE's matrix meta-trained on episodes — a random support subset of a training
  user's ratings as input, the rest of their liked items as the query, a full softmax over the
  catalog, Adam, the best epoch by validation recall (a meta-learned item-item model, initialised
  from the chosen EASE);
- `ease_rating_mf`: EASE's z-score plus β × the z-score of an explicit biased-MF rating prediction
  folded in per user from their support ratings (a per-user *like* signal EASE cannot read);
- `ease_graded`: EASE read with graded inputs: a 5-star support item 1, a 4-star one c4 (EASE reads
  both as 1), a low-rated one the chosen EASE's low-rating weight;
- `ease_support_reweight`: EASE with each user's support items reweighted by how typical each is of
  the user's other items (its leave-one-out EASE score z, z-scored over the catalog: weight
  exp(a·z / REWEIGHT_Z_SCALE), mean 1, 1 or 2 rounds): a > 0 trusts the coherent part of a support set, a < 0
  its outliers; a = 0 is EASE, so validation can keep it;
- `ease_user_knn`: EASE's z-score plus β × the z-score of a user-kNN score (the k training users
  most cosine-similar to the support, their liked items summed by similarity): the user-user view an
  item-item model does not take;
- `ease_pairs`: higher-order EASE (Steck & Liang 2021): the `n` most co-rated item pairs as extra
  inputs (a pair is on when the user rated both), their own ridge λp, and no pair predicting either
  of its own items (the pairs' analogue of EASE's zero diagonal, Lagrange multipliers per column);
- `ease_dropout_stack`: `ease_dropout`'s choice, then + β × the like-rate (`ease_like`'s term), then +
  β × the rating-MF term (`ease_rating_mf`'s), each chosen on validation with the earlier ones fixed:
  do the three item-side signals that each gained alone add up?
- `ease_cv`, `ease_dropout_cv`: EASE and `ease_dropout` with their knobs chosen by `CV_PARTS`-fold
  cross-validation over the fold's ~420 training users inside the protocol's rating window (each
  part's users scored on their own query sets by the fit on the Gram without them; the ~360 users
  outside the window stay in every part's fit) instead of on its ~47 validation users: is the noise
  of choosing among 90 settings on few users what holds the dropout model back? Their "validation"
  column is only reported: the choice read the cross-validated figure (`cv=` in the knobs).

    python -m benchmarks.item_models            # 5 folds
    python -m benchmarks.item_models --folds 1  # one fold (options: benchmarks/ml100k_topk.py's)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from benchmarks import ml100k_topk as topk
from benchmarks.item_fits import (
    higher_order_ease,
    pair_inputs,
    predicted_ratings,
    rating_mf,
    rp3beta,
    support_reweighted,
    top_pairs,
    user_knn,
    watch_to_like,
    zscore,
)
from benchmarks.protocol import fold_tasks
from metarec_tasks.data.episodes import QUERY, SUPPORT, TEST, TRAIN, VALIDATION
from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY
from metarec_tasks.ranking import baselines as bl
from metarec_tasks.selection.metrics import recall_per_user

log = logging.getLogger("benchmarks.item_models")
K = topk.K
LIKE_BETAS = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
RP3_ALPHAS = [0.5, 1.0]
RP3_BETAS = [0.0, 0.3, 0.5, 0.7]
DROPOUT_KAPPAS = [0.25, 0.5, 1.0, 2.0, 4.0]  # κ; κ = 0 is EASE
EPISODIC_LRS = [3e-5, 1e-4]
META_RIDGE_FOLDS = 5  # cross-fitting folds of the training users
META_RIDGE_STEPS = 100  # outer steps, one fold's users each
META_RIDGE_EVERY = 10  # steps between validation checks
META_RIDGE_LR = 0.05
META_RIDGE_SCALE = 5.0  # the query softmax's starting inverse temperature (learned)
EPISODIC_EPOCHS = 15
EPISODIC_BATCH = 64
EPISODIC_KEEP = (0.05, 0.9)  # a training episode keeps each rating in its support with a probability
#                              drawn log-uniform in this range: supports of 1 to most of a user's items
RATING_MF = [(8, 5.0), (16, 10.0)]  # (factors, ALS ridge)
RATING_FOLD_IN_REGS = [3.0, 10.0]
RATING_BETAS = [0.1, 0.2, 0.3, 0.5]
GRADED_C4 = [0.3, 0.5, 0.7, 0.85, 1.0]  # a 4-star support item's input weight (5-star: 1); 1 = EASE
REWEIGHT_A = [-1.0, -0.5, 0.0, 0.5, 1.0]  # the support reweighting's slope; 0 = EASE
REWEIGHT_ITERATIONS = [1, 2]
USER_KNN_K = [10, 20, 50, 100]  # neighbours
USER_KNN_BETAS = [0.0, 0.2, 0.5, 1.0, 2.0]  # the kNN term's weight; 0 = EASE
PAIR_COUNTS = [300, 1000]  # the most co-rated pairs kept as inputs (the solve is cubic in items + pairs)
PAIR_LAMBDAS = [30.0, 300.0, 3000.0]  # the pairs' ridge
CV_PARTS = 5  # cross-validation parts of the training users (ease_cv, ease_dropout_cv)
CV_STREAM = 5  # the random stream that cuts the parts (protocol.py's streams are 1-4)


@dataclass
class Users:
    """One set of evaluation users: what they read (support) and what is scored (query)."""

    users: list[str]  # the rows' user ids
    liked: np.ndarray  # [users, items] 1 for a support item rated ≥ threshold
    low: np.ndarray  # ... rated below it
    ratings: np.ndarray  # support ratings (0 = not rated)
    relevant: list[set[int]]  # query items rated ≥ threshold
    excluded: np.ndarray  # support items: never recommended back

    def inputs(self, low_weight: float) -> np.ndarray:
        return self.liked + low_weight * self.low

    def recall(self, scores: np.ndarray) -> np.ndarray:
        return recall_per_user(scores, self.excluded, self.relevant, K)


def dense(frame: pd.DataFrame, users: list[str], n_items: int, values: np.ndarray) -> np.ndarray:
    row = {u: k for k, u in enumerate(users)}
    out = np.zeros((len(users), n_items), np.float32)
    out[frame[USER_KEY].map(row).to_numpy(), frame["column"].to_numpy()] = values
    return out


def eval_users(part: pd.DataFrame, n_items: int, threshold: float) -> Users:
    users = sorted(part[USER_KEY].unique())
    support, query = part[part["role"] == SUPPORT], part[part["role"] == QUERY]
    liked = dense(support[support["value"] >= threshold], users, n_items, 1.0)
    low = dense(support[support["value"] < threshold], users, n_items, 1.0)
    ratings = dense(support, users, n_items, support["value"].to_numpy())
    hits = query[query["value"] >= threshold]
    relevant = [set() for _ in users]
    index = {u: k for k, u in enumerate(users)}
    for user, column in zip(hits[USER_KEY], hits["column"], strict=True):
        relevant[index[user]].add(int(column))
    return Users(users, liked, low, ratings, relevant, (liked + low) > 0)


Model = Callable[[Users], np.ndarray]
Knobs = dict[str, float]
Choice = tuple[Knobs, Model, float]  # a model's knobs, the model, its validation Recall@K


def choose(settings: Iterable[tuple[Knobs, Model]], val: Users) -> Choice:
    """The setting with the best validation Recall@K (ties: the first); only the best is held."""
    best: Choice | None = None
    for knobs, model in settings:
        value = float(np.nanmean(val.recall(model(val))))
        if best is None or value > best[2]:
            best = (knobs, model, value)
    assert best is not None
    return best


def item_item(fits: Iterable[tuple[Knobs, np.ndarray]], low_weights: list[float]):
    """Every (knobs, item-item weights) fit read at every low-rating input weight (`Users.inputs`)."""
    for knobs, weights in fits:
        for low in low_weights:
            yield {**knobs, "low": low}, lambda u, w=weights, low=low: u.inputs(low) @ w


def ease_fits(gram: np.ndarray, lambdas: list[float], kappas: list[float]):
    """EASE (κ = 0) and its dropout ridge λ + κ·count (`baselines.EASE`), one fit at a time."""
    columns = np.arange(len(gram))
    for lam in lambdas:
        for kappa in kappas:
            yield {"λ": lam, "κ": kappa}, bl.EASE.from_gram(gram, columns, lam, len(gram), kappa).weights


def label(knobs: Knobs) -> str:
    return " ".join(f"{name}={value:g}" for name, value in knobs.items())


def cv_parts(
    learners: pd.DataFrame,
    watched: np.ndarray,
    train_users: list[str],
    n_items: int,
    threshold: float,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, Users]]:
    """The training users' tasks (`learners`) cut into `CV_PARTS` random parts: each part's `watched`
    rows (what leaves the Gram) and its users as `Users` (their support → query tasks)."""
    users = sorted(learners[USER_KEY].unique())
    row_of = {user: k for k, user in enumerate(train_users)}
    parts = []
    for part in np.array_split(np.asarray(users)[rng.permutation(len(users))], CV_PARTS):
        rows = watched[[row_of[user] for user in part]]
        parts.append(
            (rows, eval_users(learners[learners[USER_KEY].isin(set(part.tolist()))], n_items, threshold))
        )
    return parts


def cross_validated_ease(
    gram: np.ndarray,
    parts: list[tuple[np.ndarray, Users]],
    lambdas: list[float],
    kappas: list[float],
    low_weights: list[float],
) -> dict[tuple[float, float, float], float]:
    """Mean Recall@K of every (λ, κ, low-rating weight) over the `parts`' users, each part scored by
    the fit on `gram` less the part's own Gram (its users' rows `(rows, users)`), as new users."""
    totals: dict[tuple[float, float, float], float] = {}
    count = 0  # users with a relevant query item: Recall@K is undefined for the others
    for rows, users in parts:
        rest = gram - bl.binary_gram(rows, np.arange(len(gram)))
        for knobs, model in item_item(ease_fits(rest, lambdas, kappas), low_weights):
            key = (knobs["λ"], knobs["κ"], knobs["low"])
            totals[key] = totals.get(key, 0.0) + float(np.nansum(users.recall(model(users))))
        count += sum(bool(relevant) for relevant in users.relevant)
    return {key: total / count for key, total in totals.items()}


def draw_episodes(
    watched: torch.Tensor, liked: torch.Tensor, low_weight: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, kept, target) of one episode per user row: each rating kept in the support with a
    probability drawn log-uniform in `EPISODIC_KEEP`, the rest of the liked items the query."""
    low_keep, high_keep = EPISODIC_KEEP
    draw = torch.rand(len(watched), 1, generator=generator)
    share = low_keep * torch.exp(draw * math.log(high_keep / low_keep))
    kept = (torch.rand(watched.shape, generator=generator) < share) & (watched > 0)
    return kept * (liked + low_weight * (watched - liked)), kept, liked * ~kept


def query_loss(logits: torch.Tensor, kept: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[users] mean softmax loss of each user's query items over the catalog minus their support."""
    log_p = torch.log_softmax(logits.masked_fill(kept, -1e9), 1)
    return -(log_p * target).sum(1) / target.sum(1).clamp(min=1)


def closed_form_ease(gram: torch.Tensor, log_ridge: torch.Tensor) -> torch.Tensor:
    """EASE's weights for a per-item ridge exp(log_ridge), differentiable in it."""
    inverse = torch.linalg.inv(gram + torch.diag(torch.exp(log_ridge)))
    weights = -inverse / torch.diagonal(inverse)[None, :]
    return weights - torch.diag(torch.diagonal(weights))


def meta_ridge(
    gram: np.ndarray,
    watched: np.ndarray,
    liked: np.ndarray,
    ridge: np.ndarray,
    low_weight: float,
    val: Users,
    seed: int,
) -> tuple[np.ndarray, int, float]:
    """EASE's per-item ridge meta-learned through the closed form (the inner loop is EASE's exact
    fit, the outer loss the query loss of training users' episodes). A user's episodes read the fit
    without their cross-fitting fold, as a new user would; returns (EASE's weights at the best
    ridge, fitted in float64 on every training user, the best step, its validation recall)."""
    generator = torch.Generator().manual_seed(seed)
    fold = np.random.default_rng(seed).integers(0, META_RIDGE_FOLDS, len(watched))
    columns = np.arange(len(gram))
    full = torch.tensor(gram, dtype=torch.float32)
    without = [
        full - torch.tensor(bl.binary_gram(watched[fold == k], columns), dtype=torch.float32)
        for k in range(META_RIDGE_FOLDS)
    ]
    log_ridge = torch.tensor(np.log(ridge), dtype=torch.float32, requires_grad=True)
    log_scale = torch.tensor(math.log(META_RIDGE_SCALE), requires_grad=True)  # softmax temperature
    optimizer = torch.optim.Adam([log_ridge, log_scale], lr=META_RIDGE_LR)
    watched_t, liked_t = torch.tensor(watched), torch.tensor(liked)
    val_inputs = torch.tensor(val.inputs(low_weight))

    def validation() -> float:
        with torch.no_grad():
            return float(np.nanmean(val.recall((val_inputs @ closed_form_ease(full, log_ridge)).numpy())))

    best = (validation(), 0, ridge)
    for step in range(1, META_RIDGE_STEPS + 1):
        k = step % META_RIDGE_FOLDS
        rows = torch.as_tensor(np.flatnonzero(fold == k))
        inputs, kept, target = draw_episodes(watched_t[rows], liked_t[rows], low_weight, generator)
        logits = torch.exp(log_scale) * (inputs @ closed_form_ease(without[k], log_ridge))
        optimizer.zero_grad()
        query_loss(logits, kept, target).mean().backward()
        optimizer.step()
        if step % META_RIDGE_EVERY == 0 and (value := validation()) > best[0]:
            best = (value, step, torch.exp(log_ridge).detach().numpy().astype(np.float64))
    log_best = torch.log(torch.as_tensor(best[2], dtype=torch.float64))
    weights = closed_form_ease(torch.as_tensor(gram, dtype=torch.float64), log_best)
    return weights.numpy().astype(np.float32), best[1], best[0]


def episodic(
    init: np.ndarray,
    watched: np.ndarray,
    liked: np.ndarray,
    low_weight: float,
    lr: float,
    val: Users,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """EASE's matrix trained on support → query episodes of the training users (see the docstring);
    returns (weights, item bias, best epoch, its validation recall) — epoch 0 is the EASE start."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor(init, requires_grad=True)
    bias = torch.zeros(init.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([weights, bias], lr=lr)
    watched_t, liked_t = torch.tensor(watched), torch.tensor(liked)
    val_inputs = torch.tensor(val.inputs(low_weight))

    def validation() -> float:
        with torch.no_grad():
            return float(np.nanmean(val.recall((val_inputs @ weights + bias).numpy())))

    best = (validation(), 0, init, np.zeros(init.shape[0], np.float32))
    for epoch in range(1, EPISODIC_EPOCHS + 1):
        order = torch.randperm(len(watched), generator=generator)
        for start in range(0, len(order), EPISODIC_BATCH):
            rows = order[start : start + EPISODIC_BATCH]
            inputs, kept, target = draw_episodes(watched_t[rows], liked_t[rows], low_weight, generator)
            per_user = query_loss(inputs @ weights + bias, kept, target)
            optimizer.zero_grad()
            per_user.mean().backward()
            optimizer.step()
        value = validation()
        if value > best[0]:
            best = (value, epoch, weights.detach().numpy().copy(), bias.detach().numpy().copy())
    return best[2], best[3], best[1], best[0]


def run_fold(fold, tasks, folds, protocol, ratings, catalog, vocab, params, args) -> tuple[list, dict]:
    """Every model of the module docstring on one fold (`topk.run_benchmark`'s fold signature)."""
    threshold, seed = params.evaluate.relevance_threshold, args.seed
    n_items = len(catalog.item_ids)

    def with_column(frame: pd.DataFrame) -> pd.DataFrame:  # an item's catalog row, what `dense` reads
        return frame.assign(column=catalog.item_rows(frame[ITEM_KEY]))

    split = with_column(fold_tasks(tasks, folds, fold, protocol))
    held = set(split.loc[split["split"].isin([TEST, VALIDATION]), USER_KEY])
    train = with_column(ratings[~ratings[USER_KEY].isin(held)])
    train_users = sorted(train[USER_KEY].unique())
    watched = dense(train, train_users, n_items, 1.0)
    liked = dense(train[train["value"] >= threshold], train_users, n_items, 1.0)
    explicit = dense(train, train_users, n_items, train["value"].to_numpy())
    val = eval_users(split[split["split"] == VALIDATION], n_items, threshold)
    test = eval_users(split[split["split"] == TEST], n_items, threshold)

    sp = params.selection
    chosen: dict[str, Choice] = {}
    gram = bl.binary_gram(watched, np.arange(n_items))
    chosen["ease"] = choose(item_item(ease_fits(gram, sp.ease_lambdas, [0.0]), sp.low_rating_weights), val)
    ease_knobs, ease_model, _ = chosen["ease"]
    low_weight = ease_knobs["low"]

    like_rate = np.log((liked.sum(0) + 1) / (watched.sum(0) + 2))
    like_rate = (like_rate - like_rate.mean()) / like_rate.std()

    def plus_like(knobs: Knobs, model: Model) -> Iterator[tuple[Knobs, Model]]:
        """`model` + β × the like-rate, for every β."""
        for b in LIKE_BETAS:
            yield {**knobs, "β": b}, lambda u, b=b: zscore(model(u)) + b * like_rate[None, :]

    rating_mfs = [(factors, reg, *rating_mf(explicit, factors, reg)) for factors, reg in RATING_MF]

    def plus_rating(knobs: Knobs, model: Model, betas: list[float]) -> Iterator[tuple[Knobs, Model]]:
        """`model` + β × the rating-MF term, for every MF, fold-in ridge and β in `betas`."""
        for factors, reg, mean, items in rating_mfs:
            for fold_reg in RATING_FOLD_IN_REGS:
                for beta in betas:
                    yield (
                        {**knobs, "mf": factors, "mf_reg": reg, "fold_in": fold_reg, "βr": beta},
                        lambda u, m=mean, it=items, r=fold_reg, b=beta: (
                            zscore(model(u)) + b * zscore(predicted_ratings(m, it, u.ratings, r))
                        ),
                    )

    chosen["ease_like"] = choose(plus_like(ease_knobs, ease_model), val)
    dropout_fits = ease_fits(gram, sp.ease_lambdas, DROPOUT_KAPPAS)
    chosen["ease_dropout"] = choose(item_item(dropout_fits, sp.low_rating_weights), val)
    dropout_knobs = chosen["ease_dropout"][0]
    start = dropout_knobs["λ"] + dropout_knobs["κ"] * np.diag(gram)
    weights, step, value = meta_ridge(gram, watched, liked, start, dropout_knobs["low"], val, seed + fold)
    chosen["ease_meta_ridge"] = (
        {**dropout_knobs, "step": step},
        lambda u, w=weights: u.inputs(dropout_knobs["low"]) @ w,
        value,
    )
    to_like = (({"λ": lam}, watch_to_like(watched, liked, lam)) for lam in sp.ease_lambdas)
    chosen["ease_watch_to_like"] = choose(item_item(to_like, [*sp.low_rating_weights, 1.0]), val)
    walks = (
        ({"α": alpha, "β": beta}, rp3beta(watched, alpha, beta)) for alpha in RP3_ALPHAS for beta in RP3_BETAS
    )
    chosen["rp3beta"] = choose(item_item(walks, sp.low_rating_weights), val)

    ease_weights = next(ease_fits(gram, [ease_knobs["λ"]], [0.0]))[1]
    best_episodic: Choice | None = None
    for lr in EPISODIC_LRS:
        weights, bias, epoch, value = episodic(ease_weights, watched, liked, low_weight, lr, val, seed + fold)
        log.info("fold %d episodic lr %g: best epoch %d, validation %.4f", fold, lr, epoch, value)
        if best_episodic is None or value > best_episodic[2]:
            knobs = {**ease_knobs, "lr": lr, "epoch": epoch}
            best_episodic = (knobs, lambda u, w=weights, b=bias: u.inputs(low_weight) @ w + b, value)
    assert best_episodic is not None
    chosen["ease_episodic"] = best_episodic

    chosen["ease_rating_mf"] = choose(plus_rating(ease_knobs, ease_model, RATING_BETAS), val)

    def graded(u: Users, c4: float) -> np.ndarray:
        five = (u.ratings >= 5).astype(np.float32)
        return (five + c4 * (u.liked - five) + low_weight * u.low) @ ease_weights

    chosen["ease_graded"] = choose(
        (({**ease_knobs, "c4": c4}, lambda u, c4=c4: graded(u, c4)) for c4 in GRADED_C4), val
    )
    chosen["ease_support_reweight"] = choose(
        (
            (
                {**ease_knobs, "a": a, "rounds": rounds},
                lambda u, a=a, r=rounds: support_reweighted(u.inputs(low_weight), ease_weights, a, r),
            )
            for a in REWEIGHT_A
            for rounds in REWEIGHT_ITERATIONS
        ),
        val,
    )

    knn_scores: dict[tuple[int, int], np.ndarray] = {}  # (id of val or test, k): computed once each

    def knn_term(u: Users, k: int) -> np.ndarray:
        key = (id(u), k)
        if key not in knn_scores:
            knn_scores[key] = zscore(user_knn(liked, u.inputs(low_weight), k))
        return knn_scores[key]

    chosen["ease_user_knn"] = choose(
        (
            ({**ease_knobs, "k": k, "β": b}, lambda u, k=k, b=b: zscore(ease_model(u)) + b * knn_term(u, k))
            for k in USER_KNN_K
            for b in USER_KNN_BETAS
        ),
        val,
    )

    def pair_models() -> Iterator[tuple[Knobs, Model]]:
        """Higher-order EASE at every pair count and pair ridge, λ and low weight EASE's choice."""
        for count in PAIR_COUNTS:
            pairs = top_pairs(gram, count)
            for pair_lam in PAIR_LAMBDAS:
                items, pair_weights = higher_order_ease(watched, pairs, ease_knobs["λ"], pair_lam)
                yield (
                    {**ease_knobs, "pairs": count, "λp": pair_lam},
                    lambda u, p=pairs, b=items, c=pair_weights: (
                        u.inputs(low_weight) @ b + pair_inputs(u.inputs(low_weight), p) @ c
                    ),
                )

    chosen["ease_pairs"] = choose(pair_models(), val)
    dropout_model = chosen["ease_dropout"][1]
    like_knobs, like_model, _ = choose(plus_like(dropout_knobs, dropout_model), val)
    chosen["ease_dropout_stack"] = choose(plus_rating(like_knobs, like_model, [0.0, *RATING_BETAS]), val)

    learners = split[split["split"] == TRAIN]
    parts = cv_parts(
        learners, watched, train_users, n_items, threshold, np.random.default_rng([seed, CV_STREAM, fold])
    )
    cv = cross_validated_ease(gram, parts, sp.ease_lambdas, [0.0, *DROPOUT_KAPPAS], sp.low_rating_weights)
    for name, kappas in (("ease_cv", [0.0]), ("ease_dropout_cv", DROPOUT_KAPPAS)):
        lam, kappa, low = max((key for key in cv if key[1] in kappas), key=cv.__getitem__)
        fitted = next(item_item(ease_fits(gram, [lam], [kappa]), [low]))[1]
        knobs = {"λ": lam, "κ": kappa, "low": low, "cv": round(cv[lam, kappa, low], 4)}
        chosen[name] = (knobs, fitted, float(np.nanmean(val.recall(fitted(val)))))  # the column: validation

    rows, info = [], {"fold": fold, "knobs": {}, "validation": {}}
    for name, (knobs, model, value) in chosen.items():
        info["knobs"][name], info["validation"][name] = label(knobs), value
        for user, recall in zip(test.users, test.recall(model(test)), strict=True):
            if np.isfinite(recall):
                rows.append({"fold": fold, USER_KEY: user, "model": name, f"recall@{K}": recall})
        log.info("fold %d %s (%s): validation %.4f", fold, name, label(knobs), value)
    return rows, info


def build_report(frame: pd.DataFrame, infos: list[dict], protocol, params, args, started: float) -> dict:
    return topk.probe_report("item_models", frame, infos, args, started)


def markdown(report: dict) -> str:
    lines = [
        "# Item models beyond EASE? ML-100K top-K protocol",
        "",
        f"Command: `{report['command']}` — {report['folds_run']} fold(s), {report['users']} test users, "
        f"{report['seconds']:.0f} s, load average before the run {report['load_average']}. Each model's "
        "knobs chosen on the fold's validation users (`benchmarks/item_models.py` says what each is), "
        "except `ease_cv` and `ease_dropout_cv`'s: cross-validated on training users (`cv=`), their "
        "validation figure only reported; "
        f"holdout = the test users; p: Wilcoxon, paired over test users, against EASE.",
        "",
        *topk.against_ease_table(report["overall"]),
    ]
    lines += ["", "Knobs chosen per fold:", ""]
    for info in report["folds"]:
        lines.append(f"- fold {info['fold']}: " + "; ".join(f"{n} {k}" for n, k in info["knobs"].items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = topk.benchmark_parser(__doc__, "item_models.json")
    topk.run_probe(parser, {}, run_fold, build_report, markdown)  # --quick: one fold, nothing else shortened


if __name__ == "__main__":
    main()
