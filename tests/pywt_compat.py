"""PyWavelets' ``dwt``, ``idwt``, ``wavedec``, ``waverec``, ``dwtn``, ``idwtn``, ``wavedecn`` and ``waverecn`` in
torch, built from the dwt plugin's one-level filter-bank matrices (coefficient layout, lengths, boundary modes,
odd-length trimming as PyWavelets has them). Only tests use them: tests/test_dwt.py checks them against PyWavelets,
which shows the plugin's filter banks and boundary modes are PyWavelets'."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from zoo.transforms import apply_matrix
from zoo_plugins.transforms.dwt import (analysis_matrix, cast_like, check_mode, compute_dtype, filter_bank, max_level,
                                        synthesis_matrix)


def dwt(x: torch.Tensor, wavelet: str = "haar", mode: str = "symmetric", dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """One level along ``dim``: ``(cA, cD)``, as ``pywt.dwt(x, wavelet, mode, axis=dim)``."""
    check_mode(mode)
    x = x.to(compute_dtype(x))
    n = x.shape[dim]
    return (apply_matrix(x, cast_like(analysis_matrix(n, wavelet, mode, False), x), dim),
            apply_matrix(x, cast_like(analysis_matrix(n, wavelet, mode, True), x), dim))


def idwt(ca: torch.Tensor | None, cd: torch.Tensor | None, wavelet: str = "haar", mode: str = "symmetric",
         dim: int = -1) -> torch.Tensor:
    """Inverse of one level, as ``pywt.idwt``; a ``None`` part counts as zeros."""
    check_mode(mode)
    if ca is None and cd is None:
        raise ValueError("idwt needs approximation or detail coefficients")
    if ca is not None and cd is not None and ca.shape != cd.shape:
        raise ValueError(f"approximation {tuple(ca.shape)} and detail {tuple(cd.shape)} shapes differ")
    out = None
    for part, high in ((ca, False), (cd, True)):
        if part is not None:
            part = part.to(compute_dtype(part))
            term = apply_matrix(part, cast_like(synthesis_matrix(part.shape[dim], wavelet, mode, high), part), dim)
            out = term if out is None else out + term
    return out


def wavedec(x: torch.Tensor, wavelet: str = "haar", mode: str = "symmetric", level: int | None = None,
            dim: int = -1) -> list[torch.Tensor]:
    """``[cA_L, cD_L, ..., cD_1]``, as ``pywt.wavedec``."""
    level = max_level(x.shape[dim], filter_bank(wavelet).length) if level is None else level
    details = []
    a = x
    for _ in range(level):
        a, d = dwt(a, wavelet, mode, dim)
        details.append(d)
    return [a.to(compute_dtype(x)), *reversed(details)]


def _trim_to(a: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """PyWavelets drops the one extra approximation sample an odd length leaves at the next finer level."""
    for dim, (have, want) in enumerate(zip(a.shape, shape)):
        if have == want + 1:
            a = a.narrow(dim, 0, want)
        elif have != want:
            raise ValueError(f"coefficient shapes {tuple(a.shape)} and {tuple(shape)} do not fit together")
    return a


def waverec(coeffs: Sequence[torch.Tensor | None], wavelet: str = "haar", mode: str = "symmetric",
            dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`wavedec`, as ``pywt.waverec``."""
    a = coeffs[0]
    for d in coeffs[1:]:
        if a is not None and d is not None:
            a = _trim_to(a.movedim(dim, -1), d.movedim(dim, -1).shape).movedim(-1, dim)
        a = idwt(a, d, wavelet, mode, dim)
    return a


def dwtn(x: torch.Tensor, wavelet: str = "haar", mode: str = "symmetric",
         axes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """One level over several axes: keys like ``'ad'`` (a or d per axis, in ``axes`` order), as ``pywt.dwtn``."""
    out = {"": x}
    for dim in range(x.dim()) if axes is None else axes:
        out = {key + tag: part for key, value in out.items() for tag, part in zip("ad", dwt(value, wavelet, mode, dim))}
    return out


def idwtn(coeffs: Mapping[str, torch.Tensor | None], wavelet: str = "haar", mode: str = "symmetric",
          axes: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`dwtn`; missing keys count as zeros."""
    ndim = len(next(iter(coeffs)))
    axes = list(range(ndim)) if axes is None else list(axes)
    current: dict[str, Any] = dict(coeffs)
    for length, dim in reversed(list(enumerate(axes))):
        current = {
            "".join(key): idwt(current.get("".join(key) + "a"), current.get("".join(key) + "d"), wavelet, mode, dim)
            for key in itertools.product("ad", repeat=length)
        }
    return current[""]


def wavedecn(x: torch.Tensor, wavelet: str = "haar", mode: str = "symmetric", level: int | None = None,
             axes: Sequence[int] | None = None) -> list[Any]:
    """``[cA_L, {details L}, ..., {details 1}]``, as ``pywt.wavedecn``."""
    axes = list(range(x.dim())) if axes is None else list(axes)
    if level is None:
        level = min(max_level(x.shape[d], filter_bank(wavelet).length) for d in axes)
    details = []
    a = x.to(compute_dtype(x))
    for _ in range(level):
        parts = dwtn(a, wavelet, mode, axes)
        a = parts.pop("a" * len(axes))
        details.append(parts)
    return [a, *reversed(details)]


def waverecn(coeffs: Sequence[Any], wavelet: str = "haar", mode: str = "symmetric",
             axes: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`wavedecn`, as ``pywt.waverecn``."""
    a = coeffs[0]
    for details in coeffs[1:]:
        detail = next((d for d in details.values() if d is not None), None)
        if a is not None and detail is not None:
            a = _trim_to(a, detail.shape)
        ndim = len(next(iter(details))) if details else a.dim()
        a = idwtn({**details, "a" * ndim: a}, wavelet, mode, axes)
    return a
