"""Behavior logs: the landing contract and the sources that produce data in it."""
