"""Learngene materialization, generic over transforms and resize strategies.

Per gene: resize the block to the target shape, then restore each layer's mean and std. Target layers take the
source statistics interpolated over relative depth, so growing depth never reuses one layer's statistics for every
extra layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import InvalidConfigError
from .genes import Gene, GeneRecord, Genome, fan_in_size, resizable, shape_for
from .parallel import ordered_map, release_memory, single_threaded_pool
from .stats import broadcast_stat, std_mean
from .transforms import ResizeStrategy, Transform

if TYPE_CHECKING:
    import torch

# restore: each layer gets the source's mean and std. fan_in: the same, with std scaled by
# sqrt(source fan-in / target fan-in) so activations keep their variance when input widths change. none: the
# resized standardized weights are mapped back with the source statistics as they are.
STATS_RULES = ("restore", "fan_in", "none")


def interpolate_depth(values: torch.Tensor, layers: int) -> torch.Tensor:
    """Resample per-layer values to ``layers`` entries by linear interpolation over relative depth."""
    import torch

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
    import torch

    record = record.loaded()
    resize_weights = getattr(strategy, "resize_weights", None)
    if resize_weights is not None:
        # Weight-level strategies (the select and duplicate baselines) map the source's own weights; their scale
        # defines them (kept values; inputs divided by replication counts), so no statistics rule applies.
        return resize_weights(record, tuple(target_shape), transform, params).to(torch.float32)
    coeffs = record.coeffs.to(torch.float32)
    z = strategy.resize(coeffs, record.axes, target_shape, transform, params).to(torch.float32)
    if z.data_ptr() == record.coeffs.data_ptr():  # nothing to resize: don't edit the record in place below
        z = z.clone()
    mean, std = _target_stats(record, target_shape, stats)
    return _restore(z, mean, std, stats, record.stacked)


def _target_stats(record: GeneRecord, target_shape: tuple[int, ...], stats: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std each target layer gets: the source's, interpolated over relative depth (and for
    ``fan_in``, the std scaled by sqrt(source fan-in / target fan-in))."""
    if stats not in STATS_RULES:
        raise InvalidConfigError(f"unknown statistics rule '{stats}'; valid choices: {', '.join(STATS_RULES)}")
    mean, std = record.mean.float(), record.std.float()
    if record.stacked:
        mean, std = interpolate_depth(mean, target_shape[0]), interpolate_depth(std, target_shape[0])
    if stats == "fan_in" and record.fan_in:
        ratio = fan_in_size(record.axes, record.source_shape, record.fan_in) / fan_in_size(
            record.axes, tuple(target_shape), record.fan_in)
        std = std * math.sqrt(ratio)
    return mean, std


def _restore(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, stats: str, stacked: bool) -> torch.Tensor:
    """``z`` (standardized weights) mapped to the target statistics, in one in-place pass over the tensor."""
    import torch

    scale, shift = std, mean
    if stats != "none":
        # Re-standardize: cropping or padding a spectrum changes the energy per element, and an explicit
        # rescale is what keeps each layer's mean and std equal to the source's (FRONT's scaling bug).
        z_std, z_mean = std_mean(z, stacked)
        z_std = torch.where(z_std <= 1e-6, torch.ones_like(z_std), z_std)  # constant layers stay constant
        scale = std / z_std
        shift = mean - z_mean * scale
    return z.mul_(broadcast_stat(scale, z, stacked)).add_(broadcast_stat(shift, z, stacked))


def materialize_stream(records: Mapping[str, GeneRecord], sizes: Mapping[str, int], transform: Transform,
                       strategy: ResizeStrategy, params: Mapping[str, Any], stats: str = "restore",
                       workers: int = 1, together: Iterable[Iterable[str]] = (), device: Any = None
                       ) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    """The target's genes as ``(name, layer, tensor)``, built only as the consumer advances.

    With a strategy whose axes are ``separable`` (the spectral one), a stacked gene is resized over depth first, on
    its small coefficient block, and then each target layer is synthesized on its own: ``layer`` is its index and
    ``tensor`` that one layer, so memory holds a few layers, never a whole gene of the target. Otherwise ``layer``
    is None and ``tensor`` the whole gene. With ``workers`` > 1 (CPU), that many layers are built in parallel.
    Genes named together in ``together`` (those that share a parameter, like q, k and v in a fused ``c_attn``) are
    interleaved layer by layer, so a consumer assembling their shared parameter holds one layer of it at a time.
    """
    import torch

    layerwise = getattr(strategy, "separable", False) and getattr(strategy, "resize_weights", None) is None
    groups: list[list[str]] = []
    placed: set[str] = set()
    for names in [*together, *([n] for n in records)]:
        group = [n for n in names if n in records and n not in placed]
        placed.update(group)
        if group:
            groups.append(group)

    def tasks() -> Iterator[Callable[[], tuple[str, int | None, torch.Tensor]]]:
        for group in groups:
            release_memory()  # the previous group's blocks are gone: give their memory back
            blocks = {}
            for name in group:
                record = records[name]
                target_shape = _target_shape(name, record, sizes)
                if not (record.stacked and layerwise):
                    # a lazy record reads its tensors in the task (materialize_gene loads it), on a worker: reading
                    # and checking the next genes overlaps the consumer's writing of this one
                    yield lambda name=name, record=record, shape=target_shape: (  # type: ignore[misc]
                        name, None, materialize_gene(record, shape, transform, strategy, params, stats))
                    continue
                record = record.loaded()  # its depth is resized here, on the consumer's thread, before its layers
                with torch.no_grad():  # depth first, on the small coefficient block
                    coeffs = transform.synthesize(record.coeffs.to(torch.float32), 0, target_shape[0], **params)
                blocks[name] = (record, target_shape, coeffs, *_target_stats(record, target_shape, stats))
            depth = max((block[1][0] for block in blocks.values()), default=0)
            for j in range(depth):
                for name, (record, shape, coeffs, mean, std) in blocks.items():
                    if j < shape[0]:
                        yield partial(_layer, name, j, record.axes[1:], shape[1:], coeffs, mean[j], std[j],
                                      transform, strategy, params, stats)

    def run(task: Callable[[], tuple[str, int | None, torch.Tensor]]) -> tuple[str, int | None, torch.Tensor]:
        with torch.no_grad():
            return task()

    if device is None and records:
        device = next(iter(records.values())).loaded().coeffs.device
    with single_threaded_pool(workers, device) as pool:
        yield from ordered_map(run, tasks(), pool)


def _layer(name: str, j: int, axes: tuple[str, ...], shape: tuple[int, ...], coeffs: torch.Tensor,
           mean: torch.Tensor, std: torch.Tensor, transform: Transform, strategy: ResizeStrategy,
           params: Mapping[str, Any], stats: str) -> tuple[str, int, torch.Tensor]:
    """Target layer ``j`` of a gene whose coefficients were already resized over depth."""
    import torch

    z = strategy.resize(coeffs[j], axes, shape, transform, params).to(torch.float32)
    if z.data_ptr() == coeffs[j].data_ptr():
        z = z.clone()  # nothing was resized: a view of the shared block, which must stay intact
    return name, j, _restore(z, mean, std, stats, False)


def _target_shape(name: str, record: GeneRecord, sizes: Mapping[str, int]) -> tuple[int, ...]:
    target_shape = shape_for(record.axes, sizes)
    for role, src, dst in zip(record.axes, record.source_shape, target_shape):
        if not resizable(role) and src != dst:
            raise InvalidConfigError(f"gene '{name}': axis '{role}' is never resized ({src} -> {dst})")
    return target_shape


def materialize(records: Mapping[str, GeneRecord], sizes: Mapping[str, int], transform: Transform,
                strategy: ResizeStrategy, params: Mapping[str, Any], stats: str = "restore") -> Genome:
    genome: Genome = {}
    for name, record in records.items():
        target_shape = _target_shape(name, record, sizes)
        tensor = materialize_gene(record, target_shape, transform, strategy, params, stats)
        genome[name] = Gene(name, tensor, record.axes, record.fan_in)
    return genome


__all__ = ["STATS_RULES", "interpolate_depth", "materialize", "materialize_gene", "materialize_stream"]
