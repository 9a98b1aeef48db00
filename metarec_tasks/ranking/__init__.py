"""Top-K by a model trained to rank: who interacts with what, meta-learned for cold-start users.

A rating predictor ranks the full catalog worse than popularity, so the published top-K comes from
`RankNet` (`models/ranking.py`): score(u, i) = <user vector, item vector> + item bias. The user vector
is the only thing adapted per user (`ranking.meta.adapt` = head; mlp also adapts the user-feature
tower), so scoring the whole catalog for a chunk of users is one matmul against the item table.
It is trained by the one loop (`training/ranker.py`) with a ranking objective of the one engine
(`meta/objectives.py`: sampled softmax with logQ correction, or BPR).

- `data.py`       the ranker's view of a run: training positives, evaluation users, the sampler
- `episodes.py`   ranking tasks: support/query positives (weighted by event type) + sampled negatives
- `scoring.py`    full-catalog (or candidate-pool) scoring, seen and unavailable items excluded
- `baselines.py`  popularity, popularity + MF fold-in, item-kNN, EASE
- `prior.py`      the item-item prior in the ranker's score (EASE of the support, cross-fitted)

The published score (`ranking.objective`): `ranking` → the RankNet score; `rating` → the predicted
rating of the rating network; `both` → RankNet score + `ranking.rating_weight` × (predicted rating −
global mean). Items whose side-table `available` is false are never recommended.
"""
