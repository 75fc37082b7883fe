"""Hooks registered in the ``mmtwins`` scope."""
from .class_coverage_hook import ClassCoverageHook
from .finite_loss_hook import FiniteLossHook
from .num_class_check_hook import NumClassCheckHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = [
    'ClassCoverageHook', 'FiniteLossHook', 'NumClassCheckHook',
    'SafeCheckpointHook'
]
