"""backbones of mmtwins."""

__all__: list = []
