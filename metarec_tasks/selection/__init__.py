"""Select and fuse every night: every top-K candidate (the meta-learned ranker, its fine-tuned
warm-up, EASE, popularity + MF, item-kNN, popularity, and a learned blend of them) is tuned and
judged on *validation* users only; the best becomes the night's challenger, reported on holdout
users and published unless the champion is better.

- `metrics.py`     Recall@K of score matrices, vectorized (what tuning and selection maximise)
- `candidates.py`  the candidates, each baseline's knobs chosen on validation users from a grid
- `fusion.py`      the blend: per-user normalised scores, weights per support-size bucket
- `select.py`      the night's selection table and challenger
"""
