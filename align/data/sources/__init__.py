"""Importing this package registers every dataset source (one module per dataset)."""

from align.data.sources import folder, synthetic, terra_incognita, vlcs

__all__ = ["folder", "synthetic", "terra_incognita", "vlcs"]
