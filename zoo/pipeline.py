"""Learngene extraction and materialization, generic over adapters, transforms and resize strategies.

Extraction, per gene: standardize each layer (FRONT's z-score), transform every resizable axis and keep the
low-frequency block. Materialization, per gene: resize the block to the target shape, then restore each layer's
mean and std. Target layers take the source statistics interpolated over relative depth, so growing depth never
reuses one layer's statistics for every extra layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .errors import InvalidConfigError
from .genes import DEPTH, Gene, Genome, fan_in_size, resizable, shape_for
from .registry.entities import GeneRecord
from .transforms import ResizeStrategy, Transform

EPS = 1e-12
# restore: each layer gets the source's mean and std. fan_in: the same, with std scaled by
# sqrt(source fan-in / target fan-in) so activations keep their variance when input widths change. none: the
# resized standardized weights are mapped back with the source statistics as they are.
STATS_RULES = ("restore", "fan_in", "none")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_keep(keep: float | str | Mapping[str, float] | None) -> dict[str, float]:
    """``0.5``, ``"0.5"``, ``"hidden=0.5,depth=1"`` or a mapping -> ``{role: ratio}`` (``"*"`` is the default)."""
    if keep is None:
        return {"*": 1.0}
    if isinstance(keep, Mapping):
        ratios = {str(k): v for k, v in keep.items()}
    elif isinstance(keep, (int, float)) and not isinstance(keep, bool):
        ratios = {"*": keep}
    elif isinstance(keep, str):
        ratios = {}
        for item in keep.split(","):
            role, sep, value = item.strip().rpartition("=")
            ratios[role.strip() if sep else "*"] = value  # type: ignore[assignment]
    else:
        raise InvalidConfigError(f"--keep must be a ratio like 0.5 or 'hidden=0.5,depth=1', got {keep!r}")
    out: dict[str, float] = {}
    for role, value in ratios.items():
        try:
            ratio = float(value)
        except (TypeError, ValueError):
            raise InvalidConfigError(f"--keep ratio for '{role}' must be a number in (0, 1], got {value!r}") from None
        if isinstance(value, bool) or not (0.0 < ratio <= 1.0):
            raise InvalidConfigError(f"--keep ratio for '{role}' must be in (0, 1], got {value}")
        out[role] = ratio
    out.setdefault("*", 1.0)
    return out


def kept_size(n: int, role: str, keep: Mapping[str, float]) -> int:
    ratio = keep.get(role, keep["*"])
    return max(1, min(n, math.ceil(n * ratio - 1e-9)))


def _expand(stat: torch.Tensor, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    return stat.reshape(-1, *([1] * (x.dim() - 1))) if stacked else stat


def extract_gene(gene: Gene, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
                 dtype: torch.dtype = torch.float32) -> GeneRecord:
    x = gene.tensor.detach().to(torch.float64 if gene.tensor.dtype == torch.float64 else torch.float32)
    std, mean = _std_mean(x, gene.stacked)
    z = (x - _expand(mean, x, gene.stacked)) / _expand(std.clamp_min(EPS), x, gene.stacked)
    coeffs = z
    for dim, role in enumerate(gene.axes):
        if resizable(role):
            coeffs = transform.analyze(coeffs, dim, kept_size(x.shape[dim], role, keep), **params)
    return GeneRecord(gene.name, gene.axes, tuple(x.shape), coeffs.to(dtype), mean.float(), std.float(), gene.fan_in)


def extract(genome: Genome, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
            dtype: torch.dtype = torch.float32) -> dict[str, GeneRecord]:
    return {name: extract_gene(gene, transform, keep, params, dtype) for name, gene in genome.items()}


def interpolate_depth(values: torch.Tensor, layers: int) -> torch.Tensor:
    """Resample per-layer values to ``layers`` entries by linear interpolation over relative depth."""
    n = values.shape[0]
    if n == layers:
        return values
    if n == 1:
        return values.expand(layers).clone()
    pos = torch.linspace(0, n - 1, layers, dtype=torch.float64, device=values.device) if layers > 1 else \
        torch.full((1,), (n - 1) / 2, dtype=torch.float64, device=values.device)
    lo = pos.floor().long().clamp(max=n - 2)
    frac = (pos - lo).to(values.dtype)
    return values[lo] * (1 - frac) + values[lo + 1] * frac


def materialize_gene(record: GeneRecord, target_shape: tuple[int, ...], transform: Transform,
                     strategy: ResizeStrategy, params: Mapping[str, Any], stats: str = "restore") -> torch.Tensor:
    resize_weights = getattr(strategy, "resize_weights", None)
    if resize_weights is not None:
        # Weight-level strategies (the select and duplicate baselines) map the source's own weights; their scale
        # defines them (kept values; inputs divided by replication counts), so no statistics rule applies.
        return resize_weights(record, tuple(target_shape), transform, params).to(torch.float32)
    coeffs = record.coeffs.to(torch.float32)
    z = strategy.resize(coeffs, record.axes, target_shape, transform, params).to(torch.float32)
    if z.data_ptr() == record.coeffs.data_ptr():  # nothing to resize: don't edit the record in place below
        z = z.clone()
    stacked = record.stacked
    mean, std = record.mean.float(), record.std.float()
    if stacked:
        mean, std = interpolate_depth(mean, target_shape[0]), interpolate_depth(std, target_shape[0])
    if stats not in STATS_RULES:
        raise InvalidConfigError(f"unknown statistics rule '{stats}'; valid choices: {', '.join(STATS_RULES)}")
    if stats == "fan_in" and record.fan_in:
        ratio = fan_in_size(record.axes, record.source_shape, record.fan_in) / fan_in_size(
            record.axes, tuple(target_shape), record.fan_in)
        std = std * math.sqrt(ratio)
    # out = z * scale + shift, per layer, in one in-place pass over the (possibly large) tensor
    scale, shift = std, mean
    if stats != "none":
        # Re-standardize: cropping or padding a spectrum changes the energy per element, and an explicit
        # rescale is what keeps each layer's mean and std equal to the source's (FRONT's scaling bug).
        z_std, z_mean = _std_mean(z, stacked)
        z_std = torch.where(z_std <= 1e-6, torch.ones_like(z_std), z_std)  # constant layers stay constant
        scale = std / z_std
        shift = mean - z_mean * scale
    return z.mul_(_expand(scale, z, stacked)).add_(_expand(shift, z, stacked))


def _std_mean(x: torch.Tensor, stacked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if stacked:
        return torch.std_mean(x.reshape(x.shape[0], -1), dim=1, correction=0)
    if x.numel() <= 1:
        return torch.zeros((), dtype=x.dtype, device=x.device), x.reshape(-1)[0] if x.numel() else x.sum()
    return torch.std_mean(x, correction=0)


def materialize(records: Mapping[str, GeneRecord], sizes: Mapping[str, int], transform: Transform,
                strategy: ResizeStrategy, params: Mapping[str, Any], stats: str = "restore") -> Genome:
    genome: Genome = {}
    for name, record in records.items():
        target_shape = shape_for(record.axes, sizes)
        for role, src, dst in zip(record.axes, record.source_shape, target_shape):
            if not resizable(role) and src != dst:
                raise InvalidConfigError(f"gene '{name}': axis '{role}' is never resized ({src} -> {dst})")
        tensor = materialize_gene(record, target_shape, transform, strategy, params, stats)
        genome[name] = Gene(name, tensor, record.axes, record.fan_in)
    return genome


__all__ = ["DEPTH", "STATS_RULES", "extract", "interpolate_depth", "materialize", "parse_keep"]
