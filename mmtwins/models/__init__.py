"""Models of mmtwins, registered in the ``mmtwins`` scope."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .dense_heads import *  # noqa: F401,F403
from .dense_heads import __all__ as _heads
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers
from .necks import *  # noqa: F401,F403
from .necks import __all__ as _necks

__all__ = [*_backbones, *_heads, *_layers, *_necks]
