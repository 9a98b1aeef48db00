"""Failures the pipeline expects and reports without a traceback, each with its exit code.

Kept free of heavy imports so the CLI can catch them without importing torch or Great Expectations.
The exit code is part of the error type (data, not log text): the CLI returns it, and records it in
the workspace's stage status file, which is how a driver that only sees `dvc repro` fail learns it.
"""

EXIT_OK = 0
EXIT_DATA_QUALITY = 2
EXIT_TRAINING = 3
EXIT_MODEL_FILE = 4


class MetaRecError(RuntimeError):
    """Base of the expected failures; `exit_code` is what `metarec` exits with."""

    exit_code = 1
    what = "failed"


class DataQualityError(MetaRecError):
    """A batch-level check failed: the run must stop before bad data reaches a model."""

    exit_code = EXIT_DATA_QUALITY
    what = "failed a data-quality check"


class NonFiniteLossError(MetaRecError):
    """Training diverged; no model was written and the previous one is untouched."""

    exit_code = EXIT_TRAINING
    what = "stopped"


class ModelFileError(MetaRecError):
    """The file is not a MetaRec model (or not one this version can read)."""

    exit_code = EXIT_MODEL_FILE
    what = "refused the model file"


def retryable(exit_code: int) -> bool:
    """Bad data stays bad on a retry; a lost worker or a full disk may not."""
    return exit_code != EXIT_DATA_QUALITY
