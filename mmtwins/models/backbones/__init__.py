"""Backbones of mmtwins."""
from .sasa_resnet import SASAResNet
from .twins import TwinsPCPVT, TwinsSVT

__all__ = ['TwinsPCPVT', 'TwinsSVT', 'SASAResNet']
