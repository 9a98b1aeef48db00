"""Top-K by a model trained to rank: who interacts with what, meta-learned for cold-start users.

A rating predictor ranks the full catalog worse than popularity (DESIGN.md, "Measured here"), so the
published top-K comes from `RankNet`: score(u, i) = <user vector, item vector> + item bias. The user
vector is the only thing adapted per user (`ranking.adapt` = head; mlp also adapts the user-feature
tower), so scoring the whole catalog for a chunk of users is one matmul against the item table.

- `model.py`      RankNet (two towers, dot product) and its save/load format
- `objectives.py` sampled softmax with logQ correction, BPR — per task, over padded rows
- `engine.py`     the inner loop with a ranking loss: an `Engine` every meta-learner accepts unchanged
- `episodes.py`   ranking tasks: support/query positives (weighted by event type) + sampled negatives
- `fit.py`        pretraining and meta-training loop, validated on full-catalog Recall@K
- `scoring.py`    full-catalog (or candidate-pool) scoring, seen and unavailable items excluded
- `baselines.py`  popularity, popularity + MF fold-in, item-kNN

The published score (`ranking.objective`): `ranking` → the RankNet score; `rating` → the predicted
rating of the rating network; `both` → RankNet score + `ranking.rating_weight` × (predicted rating −
global mean). Items whose side-table `available` is false are never recommended.
"""
