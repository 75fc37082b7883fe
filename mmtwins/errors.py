"""Exceptions for bad input that mmtwins itself detects.

Everything here is a problem in what the user gave (a config, a dataset, a
checkpoint file), not a bug; the message fits on one line and names the
file or setting and what to do. The command-line tools print these as one
``error:`` line (``tools/cli/errors.py``).
"""


class InputError(Exception):
    """Base class: bad user input found by the mmtwins library."""


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be read, or whose keys do not fit."""


class ConfigDataMismatchError(InputError, ValueError):
    """A config that disagrees with its dataset (e.g. ``num_classes``)."""


class NonFiniteError(InputError, ArithmeticError):
    """A loss or model weights that are NaN or infinite (a run that
    diverged, usually from a learning rate that is too high)."""


class CheckpointSaveError(InputError, OSError):
    """A checkpoint that could not be written (e.g. the disk is full); the
    previous checkpoint is intact."""


class WorkDirBusyError(InputError, RuntimeError):
    """A work dir that another training run holds."""
