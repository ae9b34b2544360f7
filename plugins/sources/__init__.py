"""Sources: checkpoint formats zoo's own resolver does not read, through the ``resolve_source`` hook."""
