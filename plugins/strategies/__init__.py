"""Resize strategies: a learngene's coefficients (or the source's weights) to a tensor of the target shape."""
