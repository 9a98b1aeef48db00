"""Personalization: adapt the trained initialization to each user and score the catalog — holdout
predictions for evaluation, and the published top-K."""
