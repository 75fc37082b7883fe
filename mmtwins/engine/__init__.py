"""Training-loop parts of mmtwins: crash-safe checkpoints and resume, the
NaN/inf loss guard, one run per work dir, and the checks of the data's
classes against the model's (``mmtwins.SafeCheckpointHook``,
``mmtwins.FiniteLossHook``, ``mmtwins.NumClassCheckHook``,
``mmtwins.ClassCoverageHook``)."""
from .atomic_files import AtomicLocalBackend, atomic_write
from .hooks import (
    ClassCoverageHook,
    FiniteLossHook,
    NumClassCheckHook,
    SafeCheckpointHook,
)
from .resume import ResumeChoice, find_resume_checkpoint
from .run_lock import WorkDirLock

__all__ = [
    'AtomicLocalBackend', 'ClassCoverageHook', 'FiniteLossHook',
    'NumClassCheckHook', 'ResumeChoice', 'SafeCheckpointHook',
    'WorkDirLock', 'atomic_write', 'find_resume_checkpoint'
]
