"""Canonical weights: a model as named genes whose axes are tagged with roles.

A gene is one tensor, or one tensor per layer stacked along a leading ``depth`` axis. Every axis carries a role
(``hidden``, ``heads``, ``head_dim``, ``ffn``, ``vocab``, ...). Transforms and resize strategies only ever see
roles, never model names: that is what lets one DCT serve BERT, GPT-2 and anything a plugin adds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


@dataclass
class GeneRecord:
    """One gene of a learngene: its coefficient block and the statistics materialization restores."""

    name: str
    axes: tuple[str, ...]
    source_shape: tuple[int, ...]
    coeffs: torch.Tensor
    mean: torch.Tensor  # per layer for stacked genes, else a scalar
    std: torch.Tensor
    fan_in: int = 0  # trailing axes that are inputs (see zoo.genes.Gene)

    @property
    def stacked(self) -> bool:
        return bool(self.axes) and self.axes[0] == DEPTH

    def loaded(self) -> GeneRecord:
        """This record with its tensors in memory (a record from ``Registry.genes(lazy=True)`` reads them now)."""
        return self


class LazyGeneRecord(GeneRecord):
    """A stored gene's metadata, whose tensors are read from the registry only by :meth:`loaded`, each time:
    a caller streaming a big learngene holds one gene's tensors at a time, never all of them."""

    def __init__(self, name: str, axes: tuple[str, ...], source_shape: tuple[int, ...], fan_in: int,
                 load: Any):
        self.name, self.axes, self.source_shape, self.fan_in = name, axes, source_shape, fan_in
        self._load = load

    def loaded(self) -> GeneRecord:
        return self._load()

    def __getattr__(self, attr: str) -> Any:
        if attr in ("coeffs", "mean", "std"):  # a caller that does not stream: read it (not cached)
            return getattr(self._load(), attr)
        raise AttributeError(attr)


@dataclass
class GeneGroup:
    """Genes read together, one layer at a time: fused parameters (GPT-2's ``c_attn`` holds q, k and v) are read
    once per layer for all the genes they hold. ``genes`` are (name, axes, fan_in); ``layers()`` yields, per layer
    (once for unstacked genes), a function that reads that layer: a mapping of gene name -> tensor. Reading is
    deferred so that layers can be read and transformed in parallel."""

    genes: list[tuple[str, tuple[str, ...], int]]
    depth: int | None  # layers of stacked genes; None for unstacked ones
    layers: Callable[[], Iterator[Callable[[], Mapping[str, torch.Tensor]]]]

    @property
    def stacked(self) -> bool:
        return self.depth is not None


def genome_groups(genome: Genome) -> Iterator[GeneGroup]:
    """One group per gene of an in-memory genome (the layers are views of its tensors)."""
    for gene in genome.values():
        def layers(gene: Gene = gene) -> Iterator[Callable[[], Mapping[str, torch.Tensor]]]:
            for layer in gene.tensor.unbind(0) if gene.stacked else [gene.tensor]:
                yield lambda layer=layer: {gene.name: layer}  # type: ignore[misc]
        yield GeneGroup([(gene.name, gene.axes, gene.fan_in)], gene.tensor.shape[0] if gene.stacked else None,
                        layers)


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


def check_fixed_axes(axes: Sequence[str], shape: Sequence[int], target_shape: Sequence[int]) -> None:
    """Raise if an axis that is never resized (a vocabulary) would change length: a strategy's last guard, so that
    no strategy resizes one silently."""
    for role, n, m in zip(axes, shape, target_shape):
        if not resizable(role) and int(n) != int(m):
            raise ValueError(f"axis '{role}' is never resized ({n} -> {m})")


def genome_of(groups: Iterable[GeneGroup]) -> Genome:
    """Every gene of ``groups`` in memory, stacked over depth (the inverse of :func:`genome_groups`)."""
    import torch

    genome: Genome = {}
    for group in groups:
        layers = [read() for read in group.layers()]
        for name, axes, fan_in in group.genes:
            tensors = [layer[name] for layer in layers if name in layer]
            if not tensors:
                continue
            tensor = torch.stack(tensors) if group.stacked else tensors[0]
            genome[name] = Gene(name, tensor, axes, fan_in)
    return genome
