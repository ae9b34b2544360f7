"""Architecture adapters: where each weight of a model family lives, as genes."""
