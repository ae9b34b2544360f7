"""Baseline resize strategies, so users can compare zoo's spectral transfer with what they would otherwise pick.

* ``select``: Weight Selection (Xu et al., ICLR 2024) for large-to-small. Every resizable axis keeps a uniform
  subset of its elements (every ``n/m``-th when ``m`` divides ``n``, else ``round(linspace(0, n - 1, m))``, the
  reference code's rule with its out-of-range index fixed) and depth keeps the first ``m`` layers.
* ``duplicate``: Net2Net / HyperCloning widening plus layer stacking for small-to-large. Target unit ``j`` of an
  axis copies source unit ``j * n // m`` (each unit is repeated ``m // n`` or ``m // n + 1`` times, spread evenly),
  and every copy of an *input* (a gene's trailing ``fan_in`` axes) is divided by its replication count, so a linear
  layer computes exactly what it did. Target layer ``j`` copies source layer ``j * L // M`` (adjacent stacking,
  as in StackBERT / bert2BERT).

What ``duplicate`` preserves exactly: widening the feed-forward axis, heads (head size kept) and any linear map;
widening ``hidden`` by a whole factor (LayerNorm then sees every coordinate equally often). A non-integer widening of
``hidden`` changes a LayerNorm's mean and variance (some coordinates count twice), and so is close but not exact;
``head_dim`` widening changes attention's ``1/sqrt(head_dim)`` scale; tied input/output embeddings cannot be both
copied and divided; stacked layers are copies, not identities, so growing depth is never function-preserving.
Replicas stay exact replicas under training until noise or dropout breaks the symmetry (Net2Net's caveat).

Both act on the source's own weights, not on standardized coefficients: they rebuild the full weights from the
stored block with ``transform.synthesize`` at the source size (exact for a ``--keep 1`` learngene; with a smaller
keep they select from its low-passed reconstruction) and restore each layer's own mean and std. The pipeline calls
:meth:`resize_weights` for strategies that have it, and no statistics rule applies afterwards: Weight Selection is
defined by keeping values, and duplication by its division, which re-standardizing would undo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo import InvalidConfigError, hookimpl
from zoo.genes import DEPTH, GeneRecord, check_fixed_axes, resizable
from zoo.transforms import Transform

if TYPE_CHECKING:
    import torch


def select_indices(n: int, m: int) -> torch.Tensor:
    """Weight Selection's uniform element selection of ``m`` out of ``n`` (``m <= n``)."""
    import torch

    if n % m == 0:
        return torch.arange(m) * (n // m)
    return torch.round(torch.linspace(0, n - 1, m, dtype=torch.float64)).long()


def duplicate_indices(n: int, m: int) -> torch.Tensor:
    """Source unit of each of ``m >= n`` target units: each unit repeated ``m // n`` or ``m // n + 1`` times."""
    import torch

    return torch.arange(m) * n // m


def source_weights(record: GeneRecord, transform: Transform, params: Mapping[str, Any]) -> torch.Tensor:
    """The gene's weights at the source size: every resizable axis synthesized at its source length, then each
    layer's mean and std restored (exactly the source's weights for a keep-1 learngene)."""
    import torch

    z = record.coeffs.to(torch.float32)
    for dim, role in enumerate(record.axes):
        if resizable(role):
            z = transform.synthesize(z, dim, int(record.source_shape[dim]), **params)
    z = z.to(torch.float32)
    mean, std = record.mean.float().to(z.device), record.std.float().to(z.device)
    if record.stacked:
        mean, std = mean.reshape(-1, *([1] * (z.dim() - 1))), std.reshape(-1, *([1] * (z.dim() - 1)))
    return z * std + mean


# A token grid is not a set of units: both baselines resample it in either direction (nearest grid points), as a
# ViT run at another image size interpolates its position table.
SPATIAL_ROLES = frozenset({"grid_h", "grid_w"})


def spatial_indices(n: int, m: int) -> torch.Tensor:
    """Source grid point of each of ``m`` target points: evenly spread when shrinking, repeated when growing."""
    return select_indices(n, m) if m < n else duplicate_indices(n, m)


class _Baseline:
    """Shared shape checks and the ``resize`` protocol method; subclasses give per-axis index maps."""

    name: str
    description: str
    grows: bool  # the direction this baseline is defined for

    def layer_map(self, n: int, m: int) -> torch.Tensor:
        raise NotImplementedError

    def unit_map(self, n: int, m: int) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, role: str, n: int, m: int) -> None:
        check_fixed_axes((role,), (n,), (m,))
        if resizable(role) and role not in SPATIAL_ROLES and ((m < n) if self.grows else (m > n)):
            other = "select" if self.grows else "duplicate"
            raise InvalidConfigError(
                f"resize strategy '{self.name}' only {'grows' if self.grows else 'shrinks'} axes, but '{role}' goes "
                f"{n} -> {m}; use --strategy {other} for that direction or spectral (any direction)")

    def map_axes(self, w: torch.Tensor, axes: Sequence[str], target_shape: Sequence[int], fan_in: int) -> torch.Tensor:
        """Index every axis of ``w`` to its target length; on the trailing ``fan_in`` (input) axes, divide each
        element by the number of times its source unit was repeated (always 1 when selecting)."""
        import torch

        out = w
        first_input = len(axes) - fan_in
        for dim, role in enumerate(axes):
            n, m = int(w.shape[dim]), int(target_shape[dim])
            self._check(role, n, m)
            if n == m:
                continue
            mapping = self.layer_map if role == DEPTH else spatial_indices if role in SPATIAL_ROLES else self.unit_map
            index = mapping(n, m).to(w.device)
            out = out.index_select(dim, index)
            if dim >= first_input:
                counts = torch.bincount(index, minlength=n).to(out.dtype)[index]
                out = out / counts.reshape(-1, *([1] * (out.dim() - dim - 1)))
        return out

    def replicas(self, record: GeneRecord, role: str, size: int) -> torch.Tensor | None:
        """How many target units copy each one's source unit along ``role`` (None: none is a copy)."""
        import torch

        if role not in record.axes or role == DEPTH:
            return None
        n = int(record.source_shape[record.axes.index(role)])
        if size <= n or role in SPATIAL_ROLES:
            return None
        index = self.unit_map(n, size)
        return torch.bincount(index, minlength=n)[index].float()

    def resize_weights(self, record: GeneRecord, target_shape: Sequence[int], transform: Transform,
                       params: Mapping[str, Any]) -> torch.Tensor:
        """Target weights (not standardized) from the learngene of one gene; called by zoo's pipeline."""
        return self.map_axes(source_weights(record, transform, params), record.axes, target_shape, record.fan_in)

    def resize(self, coeffs: torch.Tensor, axes: Sequence[str], target_shape: Sequence[int], transform: Transform,
               params: Mapping[str, Any]) -> torch.Tensor:
        """The ResizeStrategy protocol on standardized values: the block is synthesized at its own lengths and then
        indexed (no fan-in is known here, so nothing is divided); zoo's pipeline uses :meth:`resize_weights`."""
        z = coeffs
        for dim, role in enumerate(axes):
            if resizable(role):
                z = transform.synthesize(z, dim, int(coeffs.shape[dim]), **params)
        return self.map_axes(z, axes, target_shape, 0)


class Select(_Baseline):
    name = "select"
    description = "Weight Selection baseline (large-to-small): uniform elements per axis, first N layers"
    grows = False

    def layer_map(self, n: int, m: int) -> torch.Tensor:
        import torch

        return torch.arange(m)

    def unit_map(self, n: int, m: int) -> torch.Tensor:
        return select_indices(n, m)


class Duplicate(_Baseline):
    name = "duplicate"
    description = "Net2Net/HyperCloning baseline (small-to-large): copy units, divide copied inputs, stack layers"
    grows = True

    def layer_map(self, n: int, m: int) -> torch.Tensor:
        return duplicate_indices(n, m)

    def unit_map(self, n: int, m: int) -> torch.Tensor:
        return duplicate_indices(n, m)


@hookimpl
def register_resize_strategies(register):
    register(Select())
    register(Duplicate())
