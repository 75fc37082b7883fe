"""necks of mmtwins."""

__all__: list = []
