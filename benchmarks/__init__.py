"""Benchmark scripts (run as `python -m benchmarks.<name>`); each writes JSON + Markdown under reports/."""
