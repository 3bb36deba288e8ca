"""Tarifa: asynchronous billing and collections engine."""

__version__ = "0.1.0"
