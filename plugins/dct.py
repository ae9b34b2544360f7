"""FRONT's transform: the orthonormal DCT-II, as matrix products in torch so it runs on any device.

Orthonormal (``norm="ortho"``) rather than FRONT's unnormalized FFT form: it preserves energy, so cropping or
zero-padding the spectrum neither inflates nor shrinks white-noise weights. Only the kept rows of the basis are
ever built, so extracting a truncated block costs ``keep x n`` per axis instead of a full transform.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from zoo import hookimpl
from zoo.transforms import apply_matrix


@functools.lru_cache(maxsize=64)
def _basis_cpu(n: int, rows: int) -> torch.Tensor:
    """First ``rows`` rows of the n-point orthonormal DCT-II matrix, in float64."""
    k = torch.arange(rows, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def dct_basis(n: int, rows: int | None = None, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # copy: the cached basis must never be handed out, or an in-place edit by a caller would poison every DCT
    return _basis_cpu(n, n if rows is None else rows).to(device=device, dtype=dtype, copy=True)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class DCT:
    name = "dct"
    description = "orthonormal DCT-II per axis (FRONT); learngene = low-frequency block"

    def analyze(self, x: torch.Tensor, dim: int, keep: int, **params: Any) -> torch.Tensor:
        n = x.shape[dim]
        keep = max(1, min(int(keep), n))
        dtype = _compute_dtype(x)
        return apply_matrix(x.to(dtype), dct_basis(n, keep, x.device, dtype), dim)

    def synthesize(self, coeffs: torch.Tensor, dim: int, size: int, **params: Any) -> torch.Tensor:
        # Zero-padding or cropping the spectrum then inverting == multiplying by the first k columns of the
        # target-length inverse basis, where k = min(kept, size).
        kept = coeffs.shape[dim]
        k = min(kept, size)
        dtype = _compute_dtype(coeffs)
        inverse = dct_basis(size, k, coeffs.device, dtype).T  # [size, k]
        if k < kept:
            coeffs = coeffs.narrow(dim, 0, k)
        return apply_matrix(coeffs.to(dtype), inverse, dim)


@hookimpl
def register_transforms(register):
    register(DCT())
