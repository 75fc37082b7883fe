"""Layers of mmtwins."""
from mmtwins.ops import sasa_attention

from .gsa import GlobalSubsampledAttention
from .lsa import LSA_PAD_MODES, LocallyGroupedAttention
from .peg import PositionEncodingGenerator
from .sasa_attention import SASAttention
from .sasa_module import SASAModule
from .sasa_stem import SASAStem
from .twins_block import Mlp, TwinsBlock

__all__ = [
    'GlobalSubsampledAttention', 'LocallyGroupedAttention', 'LSA_PAD_MODES',
    'PositionEncodingGenerator', 'Mlp', 'TwinsBlock', 'SASAttention',
    'SASAModule', 'SASAStem', 'sasa_attention'
]
