"""Data quality for the `validate` stage, split by concern so `validate.py` reads top to bottom.

- `suite`: the Great Expectations suites generated from the contract, run per chunk, with data docs;
- `rows`: the per-row columns the suite checks (parsed time, partition lag, repeats, known ids);
- `batch`: the file- and day-level checks (columns, readability, bad-row share, volume, empty days);
- `report`: the JSON report and the rows the warehouse keeps.
"""
