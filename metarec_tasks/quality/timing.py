"""Where validate's time goes (reported in data_quality.json and by the benchmark)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_DONE = object()


class PhaseTimer:
    """Where validate's time goes (reported in data_quality.json and by the benchmark)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def iterate(self, phase: str, items: Iterator[Any]) -> Iterator[Any]:
        """Yield from `items`, counting the time spent producing each one as `phase`."""
        while True:
            with self(phase):
                item = next(items, _DONE)
            if item is _DONE:
                return
            yield item

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}
