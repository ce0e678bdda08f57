"""Experiments over runs: the papers' claims with paired intervals and verdicts."""
