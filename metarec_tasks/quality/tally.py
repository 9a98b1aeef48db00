"""What validation found: counts accumulated chunk by chunk, and the report written from them."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from metarec_tasks.logs.contract import ITEM_KEY, USER_KEY


@dataclass
class QualityReport:
    run_date: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    checks: list[dict[str, Any]]
    partitions: list[dict[str, Any]]
    failures: list[str] = field(default_factory=list)
    side_tables: dict[str, dict[str, int]] = field(default_factory=dict)
    gx_success: dict[str, bool] = field(default_factory=dict)  # per suite, as Data Docs show it
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": self.passed}


class Tally:
    """Counts the batch checks need, accumulated chunk by chunk."""

    def __init__(self, run_date: str):
        self.run_date = run_date
        self.rows = self.bad = 0
        self.reasons: Counter[str] = Counter()
        self.per_file: dict[str, dict[str, int]] = defaultdict(
            lambda: {"rows": 0, "bad": 0, "outside_partition": 0}
        )
        self.per_day: Counter[str] = Counter()
        self.file_day: dict[str, str] = {}
        self.first_seen: dict[str, pd.Series] = {}
        self.run_date_ids: dict[str, pd.Index] = {}

    def add(
        self, chunk: pd.DataFrame, bad: np.ndarray, reasons: pd.Series, outside: np.ndarray | None
    ) -> None:
        self.rows += len(chunk)
        self.bad += int(bad.sum())
        for joined, n in reasons.value_counts().items():
            for reason in str(joined).split(";"):
                self.reasons[reason] += int(n)
        flags = pd.DataFrame({"file": chunk["source_file"], "day": chunk["partition_date"], "bad": bad})
        flags["outside"] = False
        if outside is not None:
            flags.loc[outside, "outside"] = True
        for (name, day), group in flags.groupby(["file", "day"], sort=False):
            entry = self.per_file[str(name)]
            entry["rows"] += len(group)
            entry["bad"] += int(group["bad"].sum())
            entry["outside_partition"] += int(group["outside"].sum())
            self.file_day[str(name)] = str(day)
        self.per_day.update({str(k): int(v) for k, v in chunk["partition_date"].value_counts().items()})
        valid = chunk.loc[~bad, [USER_KEY, ITEM_KEY, "partition_date"]]
        for table, key in (("users", USER_KEY), ("items", ITEM_KEY)):
            first = valid.groupby(key, sort=False)["partition_date"].min()
            if table in self.first_seen:
                first = pd.concat([self.first_seen[table], first]).groupby(level=0, sort=False).min()
            self.first_seen[table] = first
            today = pd.Index(valid.loc[valid["partition_date"] == self.run_date, key].unique())
            self.run_date_ids[table] = self.run_date_ids.get(table, pd.Index([])).union(today)

    def new_share(self, table: str) -> tuple[int, int]:
        ids = self.run_date_ids.get(table)
        if ids is None or not len(ids):
            return 0, 0
        first = self.first_seen[table].reindex(ids)
        return int((first == self.run_date).sum()), len(ids)

    def partitions(self) -> list[dict[str, Any]]:
        return [
            {
                "partition_date": self.file_day[name],
                "source_file": name,
                "rows": c["rows"],
                "bad_rows": c["bad"],
                "bad_share": c["bad"] / c["rows"] if c["rows"] else 0.0,
            }
            for name, c in sorted(self.per_file.items(), key=lambda kv: (self.file_day[kv[0]], kv[0]))
        ]
