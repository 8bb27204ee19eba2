"""Precomputed object masks that are not part of a dataset (Segment Anything pseudo-masks)."""
