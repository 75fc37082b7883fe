"""dense_heads of mmtwins."""

__all__: list = []
