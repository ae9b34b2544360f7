"""The default resize strategy: synthesize every resizable axis at its target length.

With the DCT this is FRONT's crop-or-zero-pad of the low-frequency block. Growing depth is a smooth interpolation
over layers (each target layer is a distinct blend), never a copy of the same layer object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from zoo import hookimpl
from zoo.genes import resizable
from zoo.transforms import Transform


class Spectral:
    name = "spectral"
    description = "crop or zero-pad each axis's coefficients to the target size, then invert the transform"

    def resize(
        self,
        coeffs: torch.Tensor,
        axes: Sequence[str],
        target_shape: Sequence[int],
        transform: Transform,
        params: Mapping[str, Any],
    ) -> torch.Tensor:
        out = coeffs
        for dim, role in enumerate(axes):
            if resizable(role):
                out = transform.synthesize(out, dim, int(target_shape[dim]), **params)
            elif out.shape[dim] != target_shape[dim]:
                raise ValueError(f"axis '{role}' is never resized ({out.shape[dim]} -> {target_shape[dim]})")
        return out


@hookimpl
def register_resize_strategies(register):
    register(Spectral())
