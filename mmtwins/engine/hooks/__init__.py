"""Hooks registered in the ``mmtwins`` scope."""
from .num_class_check_hook import NumClassCheckHook
from .safe_checkpoint_hook import SafeCheckpointHook

__all__ = ['NumClassCheckHook', 'SafeCheckpointHook']
