"""Utilities of mmtwins.

Importing this package allowlists the globals of mmengine checkpoints for
``torch.load``'s safe loading (see :mod:`mmtwins.utils.safe_load`), so
``--resume`` works on torch >= 2.6.
"""
from .compile_memory import activation_memory_budget, check_memory_budget
from .safe_load import (
                        history_buffer_getattr,
                        mmengine_checkpoint_globals,
                        register_safe_globals,
)

register_safe_globals()

__all__ = [
    'activation_memory_budget', 'check_memory_budget',
    'history_buffer_getattr', 'mmengine_checkpoint_globals',
    'register_safe_globals'
]
