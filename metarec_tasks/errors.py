"""Failures the pipeline expects and reports without a traceback (see `cli.run_stage`).

Kept free of heavy imports so the CLI can catch them without importing torch or Great Expectations.
"""


class DataQualityError(RuntimeError):
    """A batch-level check failed: the run must stop before bad data reaches a model."""


class NonFiniteLossError(RuntimeError):
    """Training diverged; no model was written and the previous one is untouched."""


class ModelFileError(RuntimeError):
    """The file is not a MetaRec model (or not one this version can read)."""
