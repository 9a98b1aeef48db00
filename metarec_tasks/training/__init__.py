"""Training: the one meta-training loop (`loop.py`) and its two callers, the rating model (`rating.py`)
and the top-K ranker (`ranker.py`); checkpoints, data-parallel hooks, the supervised warm-up, warm
start from the champion, and run-time choices (device, seeds, threads)."""
