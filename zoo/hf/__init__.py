"""The ``transformers`` and safetensors implementation of zoo's protocols.

zoo's core (genes, the adapter and transform protocols, extraction, materialization) knows nothing of any model
library; this package is where ``transformers`` and the safetensors format come in: safetensors I/O
(:mod:`zoo.hf.safetensors_io`), putting genes into a ``transformers`` model or its files (:mod:`zoo.hf.assemble`),
and the adapter base class that turns a family's weight maps into both (:mod:`zoo.hf.adapter`). The registry, the
application layer and the plugins import it; the core never does (tests/test_import_graph.py).
"""

from ..adapters import SIZE_OPTIONS
from .adapter import ClassLayout, TransformersAdapter, WeightMap, heads_hint

__all__ = ["SIZE_OPTIONS", "ClassLayout", "TransformersAdapter", "WeightMap", "heads_hint"]
