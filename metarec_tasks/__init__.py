"""MetaRec: a nightly batch recommender for cold-start users, meta-learned per user task."""
