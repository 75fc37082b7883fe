"""layers of mmtwins."""

__all__: list = []
