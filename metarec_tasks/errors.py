"""Failures the pipeline expects and reports without a traceback, each with its exit code.

Kept free of heavy imports so the CLI can catch them without importing torch or Great Expectations.
The exit code is part of the error type (data, not log text): the CLI returns it, and records it in
the workspace's stage status file, which is how a driver that only sees `dvc repro` fail learns it.
"""

EXIT_OK = 0
EXIT_CONFIG = 2  # configuration and usage errors (argparse's code too); a retry cannot fix them
EXIT_DATA_QUALITY = 2  # bad input data; a retry cannot fix it either
EXIT_TRAINING = 3
EXIT_MODEL_FILE = 4
EXIT_WAREHOUSE = 5  # the warehouse is down, refusing or silent (a retry may succeed)
EXIT_BUSY = 6  # another stage holds the workspace (a retry may succeed)


class MetaRecError(RuntimeError):
    """Base of the expected failures; `exit_code` is what `metarec` exits with."""

    exit_code = 1
    what = "failed"


class ConfigError(MetaRecError):
    """A setting that cannot work here (named in the message); fix params.yaml or the command line."""

    exit_code = EXIT_CONFIG
    what = "cannot run with this configuration"


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
    return exit_code not in (EXIT_CONFIG, EXIT_DATA_QUALITY)


class WarehouseError(MetaRecError):
    """The warehouse could not be reached or did not answer in time; nothing was written."""

    exit_code = EXIT_WAREHOUSE
    what = "could not use the warehouse"


class WorkspaceBusyError(MetaRecError):
    """Another stage holds the workspace lock."""

    exit_code = EXIT_BUSY
    what = "did not start"
