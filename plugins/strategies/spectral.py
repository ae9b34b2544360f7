"""The default resize strategy: synthesize every resizable axis at its target length.

With the DCT this is FRONT's crop-or-zero-pad of the low-frequency block. Growing depth is a smooth interpolation
over layers (each target layer is a distinct blend), never a copy of the same layer object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo import hookimpl
from zoo.genes import check_fixed_axes, resizable
from zoo.transforms import Transform

if TYPE_CHECKING:
    import torch


class Spectral:
    name = "spectral"
    description = "crop or zero-pad each axis's coefficients to the target size, then invert the transform"
    # every axis is resized on its own, so zoo may resize depth first and then stream the target layer by layer
    separable = True

    def resize(
        self,
        coeffs: torch.Tensor,
        axes: Sequence[str],
        target_shape: Sequence[int],
        transform: Transform,
        params: Mapping[str, Any],
    ) -> torch.Tensor:
        check_fixed_axes(axes, coeffs.shape, target_shape)
        # Axes are separable, so their order does not change the result, only the cost: shrink first and grow
        # last, so every step works on the smallest intermediate tensor.
        dims = sorted((d for d, role in enumerate(axes) if resizable(role)),
                      key=lambda d: int(target_shape[d]) / coeffs.shape[d])
        out = coeffs
        for dim in dims:
            out = transform.synthesize(out, dim, int(target_shape[dim]), **params)
        return out


@hookimpl
def register_resize_strategies(register):
    register(Spectral())
