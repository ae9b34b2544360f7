"""The contracts for transforms and resize strategies, and small helpers they share.

A *transform* maps one axis of a tensor to coefficients and back (``analyze`` keeps the first ``keep``
coefficients: the learngene's low-frequency block; ``synthesize`` turns any number of coefficients into a signal of
any length). A *resize strategy* turns a learngene's coefficient block into a tensor of the target shape, usually by
asking the transform to synthesize each resizable axis at its new length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Transform(Protocol):
    """Optional attributes: ``parameters`` (name -> default; the only names ``--param`` accepts),
    ``validate_params(params) -> params`` (raise :class:`zoo.InvalidConfigError` on bad values) and
    ``default_strategy`` (the resize strategy used when the user names none; ``"spectral"`` otherwise)."""

    name: str
    description: str

    def analyze(self, x: torch.Tensor, dim: int, keep: int, **params: Any) -> torch.Tensor:
        """Coefficients of ``x`` along ``dim``, truncated to the first ``keep`` (the low-frequency block).

        Must be linear and act on each 1-D fiber along ``dim`` alike: extraction relies on it to run over slices of
        a layer and to apply the z-score to the kept block (``analyze(x - m) == analyze(x) - m * analyze(1)``)."""

    def synthesize(self, coeffs: torch.Tensor, dim: int, size: int, **params: Any) -> torch.Tensor:
        """A signal of length ``size`` along ``dim`` from a (possibly truncated) coefficient block."""


@runtime_checkable
class ResizeStrategy(Protocol):
    """Optional attributes: ``separable`` (``True``: every axis is resized on its own, so zoo may resize the depth
    axis first, on the small coefficient block, and then build the target one layer at a time by calling
    ``resize`` on each layer's block; off when absent) and ``resize_weights(record, target_shape, transform,
    params) -> tensor`` (a strategy that maps the source's own weights rather than coefficients, as the select
    and duplicate baselines do; no statistics rule is applied afterwards) and ``replicas(record, role, size) ->
    tensor | None`` (a strategy that grows an axis by copying units: per target unit, how many target units copy
    its source unit when ``record`` is resized to ``size`` along ``role``; None where no unit is a copy; zoo divides
    ``per_copy`` starts by it, :data:`zoo.hf.assemble.ABSENT_INITS`)."""

    name: str
    description: str

    def resize(
        self,
        coeffs: torch.Tensor,
        axes: Sequence[str],
        target_shape: Sequence[int],
        transform: Transform,
        params: Mapping[str, Any],
    ) -> torch.Tensor:
        """Standardized weights of ``target_shape`` from a gene's stored coefficients."""


def apply_matrix(x: torch.Tensor, matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """Multiply ``x`` along ``dim`` by ``matrix`` (shape ``[out, in]``), leaving other axes alone."""
    matrix = matrix.to(x.dtype)
    if dim % x.dim() == 0 and x.is_contiguous():  # leading axis: one left product, no transposed copies
        return (matrix @ x.reshape(x.shape[0], -1)).reshape(matrix.shape[0], *x.shape[1:])
    moved = x.movedim(dim, -1)
    return (moved @ matrix.T).movedim(-1, dim)
