"""ALIGN: explanation-guided learning with a learned masker, as a reproducible pipeline."""

__version__ = "0.1.0"
