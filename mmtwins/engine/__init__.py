"""Training-loop parts of mmtwins: crash-safe checkpoints and resume, and
the head/dataset class-count check (``mmtwins.SafeCheckpointHook``,
``mmtwins.NumClassCheckHook``)."""
from .atomic_files import AtomicLocalBackend, atomic_write
from .hooks import NumClassCheckHook, SafeCheckpointHook
from .resume import ResumeChoice, find_resume_checkpoint

__all__ = [
    'AtomicLocalBackend', 'NumClassCheckHook', 'ResumeChoice',
    'SafeCheckpointHook', 'atomic_write', 'find_resume_checkpoint'
]
