"""Transforms: one axis of a weight to coefficients and back (the learngene keeps the first ones)."""
