"""Training methods, one module each; importing this package registers them all."""

from align.methods import align, erm
from align.methods.base import METHODS, Method, Models, register_method

__all__ = ["METHODS", "Method", "Models", "align", "erm", "register_method"]
