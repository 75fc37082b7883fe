"""Utilities of mmtwins."""
