"""Evaluation: metrics, the per-user holdout tables, the gate, and the report with its charts."""
