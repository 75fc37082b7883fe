"""Backbones of mmtwins."""
from .twins import TwinsPCPVT, TwinsSVT

__all__ = ['TwinsPCPVT', 'TwinsSVT']
