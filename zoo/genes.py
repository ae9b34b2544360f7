"""Canonical weights: a model as named genes whose axes are tagged with roles.

A gene is one tensor, or one tensor per layer stacked along a leading ``depth`` axis. Every axis carries a role
(``hidden``, ``heads``, ``head_dim``, ``ffn``, ``vocab``, ...). Transforms and resize strategies only ever see
roles, never model names: that is what lets one DCT serve BERT, GPT-2 and anything a plugin adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

DEPTH = "depth"
# Axes whose size is a property of the tokenizer or of the data, not of the model's capacity: never resized.
FIXED_ROLES = frozenset({"vocab", "type_vocab", "classes", "channels"})
# Leading axes of lookup tables: their rows are not fan-in.
TABLE_ROLES = frozenset({"vocab", "type_vocab", "positions"})


@dataclass
class Gene:
    """One canonical tensor. ``axes[i]`` is the role of ``tensor``'s dimension ``i``.

    ``fan_in`` is how many trailing axes are the layer's inputs (1 for a Linear weight ``[out, in]``, 2 for an
    attention output weight ``[hidden, heads, head_dim]``, 0 for biases, norms and embeddings). Function-preserving
    resizes and fan-in scaling need it.
    """

    name: str
    tensor: torch.Tensor
    axes: tuple[str, ...]
    fan_in: int = 0

    def __post_init__(self) -> None:
        if self.tensor.dim() != len(self.axes):
            raise ValueError(f"gene '{self.name}': tensor has {self.tensor.dim()} dims but axes are {self.axes}")

    @property
    def stacked(self) -> bool:
        return bool(self.axes) and self.axes[0] == DEPTH


Genome = dict[str, Gene]


def shape_for(axes: tuple[str, ...], sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The shape a gene with these axes has in a model of these sizes."""
    missing = [role for role in axes if role not in sizes]
    if missing:
        raise KeyError(f"sizes lack roles {missing} (have {sorted(sizes)})")
    return tuple(int(sizes[role]) for role in axes)


def fan_in_size(axes: tuple[str, ...], shape: tuple[int, ...], fan_in: int) -> int:
    """Number of inputs per output unit of a gene with this shape."""
    size = 1
    for n in shape[len(shape) - fan_in:] if fan_in else ():
        size *= int(n)
    return size


def resizable(role: str) -> bool:
    return role not in FIXED_ROLES
