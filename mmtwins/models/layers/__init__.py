"""Layers of mmtwins."""
from .gsa import GlobalSubsampledAttention
from .lsa import LSA_PAD_MODES, LocallyGroupedAttention
from .peg import PositionEncodingGenerator
from .twins_block import Mlp, TwinsBlock

__all__ = [
    'GlobalSubsampledAttention', 'LocallyGroupedAttention', 'LSA_PAD_MODES',
    'PositionEncodingGenerator', 'Mlp', 'TwinsBlock'
]
