"""Data quality for the `validate` stage, split by concern so the stage reads top to bottom.

- `suite`: the Great Expectations suites generated from the contract, run per chunk, with data docs;
- `rows`: the per-row columns the suite checks (parsed time, partition lag, repeats, known ids);
- `batch`: the file- and day-level checks (columns, readability, bad-row share, volume, empty days);
- `side_tables`: the users/items side tables' row checks and quarantine;
- `chunks`: raw events read in bounded chunks, validated and quarantined rows written;
- `tally`: the counts accumulated per chunk and the report written from them;
- `timing`: where the stage's time goes.
"""
