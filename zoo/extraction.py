"""Learngene extraction, generic over adapters and transforms.

Per gene: standardize each layer (FRONT's z-score), transform every resizable axis and keep the low-frequency
block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import InvalidConfigError
from .genes import DEPTH, Gene, GeneGroup, GeneRecord, Genome, genome_groups, resizable
from .parallel import ordered_map, release_memory, single_threaded_pool
from .stats import EPS, std_mean
from .transforms import Transform

if TYPE_CHECKING:
    import torch

# Each transform pass over a layer runs in slices of about this many values (see _analyze_in_slices)
SLICE_ELEMENTS = 1 << 20
# Freed memory is handed back to the OS every this many layers (see release_memory)
TRIM_EVERY = 8
# The depth transform of a stacked gene runs over column slices of this many values
CHUNK_ELEMENTS = 1 << 23


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
    for role, value in ratios.items():  # type: ignore[assignment]  # a str above
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


def gene_groups(adapter: Any, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Iterator[GeneGroup]:
    """An adapter's genes as groups: lazily (each tensor read when extracted) if the adapter declares it can (its
    ``lazy_read`` capability: a ``gene_groups`` method), else from ``to_genome`` over the whole state dict."""
    if getattr(adapter, "lazy_read", False):
        return adapter.gene_groups(state, config)
    return genome_groups(adapter.to_genome(state if isinstance(state, dict) else dict(state), config))


def _standardize_and_analyze(x: torch.Tensor, axes: tuple[str, ...], transform: Transform,
                             keep: Mapping[str, float], params: Mapping[str, Any]
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer: z-score it (FRONT), then keep the low-frequency block of every resizable axis.

    The z-score is applied to the kept block, not to the layer: transforms are linear, so
    ``analyze((x - mean) / std) == (analyze(x) - mean * analyze(ones)) / std``. That saves two passes over the
    full layer, and the source tensor is never written to."""
    import torch

    x = x.detach()
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    std, mean = _layer_std_mean(x)
    # shrink the axis that loses the largest share first: every later pass then works on less data (ties: the axis
    # along which memory is contiguous first)
    dims = sorted((d for d, role in enumerate(axes) if resizable(role)),
                  key=lambda d: (kept_size(x.shape[d], axes[d], keep) / x.shape[d], x.stride(d)))
    kept = {d: kept_size(x.shape[d], axes[d], keep) for d in dims}
    z = x
    for dim in dims:
        z = _analyze_in_slices(transform, z, dim, kept[dim], params)
    if z.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        z = z.clone()  # nothing was transformed: never edit the source in place
    response = _constant_response(transform, x.shape, dims, kept, params).to(z.dtype).to(z.device)
    return z.sub_(mean * response).div_(std.clamp_min(EPS)), std, mean


def _analyze_in_slices(transform: Transform, x: torch.Tensor, dim: int, keep: int,
                       params: Mapping[str, Any]) -> torch.Tensor:
    """``transform.analyze`` along ``dim``, run over slices of about ``SLICE_ELEMENTS`` values along another axis
    and gathered into one output. Slices keep every temporary (reordered copies, spectra) small, so the allocator
    reuses its memory instead of mapping, zero-filling and unmapping layer-sized buffers: on a CPU that page
    traffic cost as much as the transforms. It also bounds memory for big tables (a vocabulary's embeddings)."""
    others = [a for a in range(x.dim()) if a != dim and x.shape[a] > 1]
    if x.numel() <= 2 * SLICE_ELEMENTS or not others:
        return transform.analyze(x, dim, keep, **params)
    axis = max(others, key=x.stride)  # the outermost axis: each slice is one run of memory when x is contiguous
    step = max(1, SLICE_ELEMENTS * x.shape[axis] // x.numel())
    out = None
    for start in range(0, x.shape[axis], step):
        part = transform.analyze(x.narrow(axis, start, min(step, x.shape[axis] - start)), dim, keep, **params)
        if out is None:
            shape = list(part.shape)
            shape[axis] = x.shape[axis]
            out = part.new_empty(shape)
        out.narrow(axis, start, part.shape[axis]).copy_(part)
    return out


def _constant_response(transform: Transform, shape: torch.Size, dims: list[int], kept: Mapping[int, int],
                       params: Mapping[str, Any]) -> torch.Tensor:
    """The kept block of ``analyze`` applied to all-ones of ``shape`` (size 1 along untransformed axes, where a
    constant stays constant): the outer product of each transformed axis's response to a constant signal."""
    import torch

    response = torch.ones([1] * len(shape), dtype=torch.float64)
    for d in dims:
        axis = transform.analyze(torch.ones(shape[d], dtype=torch.float64), 0, kept[d], **params)
        response = response * axis.reshape([-1 if i == d else 1 for i in range(len(shape))])
    return response


PARTIAL_NORM = 1024  # sums of squares are accumulated from partial norms of about this many values


def _layer_std_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's std and mean in two fast reductions (``torch.std_mean``'s one-pass Welford kernel is ~30x slower
    than a plain sum on a CPU): the mean, and the sum of squares accumulated in float64 from float32 partial norms
    (one float32 norm over 10M values loses ~1e-4 of relative accuracy). When the mean dominates the spread,
    ``E[x^2] - mean^2`` would cancel, and the exact two-pass kernel runs instead."""
    import torch

    n = x.numel()
    if n < 64 * PARTIAL_NORM:
        return std_mean(x, False)
    if x.is_contiguous():
        flat = x.view(-1)
        body = n - n % PARTIAL_NORM
        partial = torch.linalg.vector_norm(flat[:body].view(-1, PARTIAL_NORM), dim=1)
        squares = partial.double().square().sum() + flat[body:].double().square().sum()
    elif x.dim() > 1 and 64 <= x.shape[inner := min(range(x.dim()), key=x.stride)] <= 64 * PARTIAL_NORM:
        # a view (q of a fused qkv, a transposed weight): partial norms along its contiguous axis
        squares = torch.linalg.vector_norm(x, dim=inner).double().square().sum()
    else:
        return std_mean(x, False)
    mean = x.mean()
    mean_square = squares / n
    var = mean_square - mean.double().square()
    if var < 0.5 * mean_square:
        return std_mean(x, False)
    return var.sqrt().to(x.dtype), mean


def _analyze_layer(group: GeneGroup, read: Callable[[], Mapping[str, torch.Tensor]] | None, transform: Transform,
                   keep: Mapping[str, float], params: Mapping[str, Any], device: Any) -> dict[str, tuple]:
    """One layer of a group: gene name -> (source shape, kept block, std, mean). ``read`` None: no layer (an empty
    group, reported when its records are made)."""
    out = {}
    for name, x in (read() if read is not None else {}).items():
        axes = next(axes for gene, axes, _ in group.genes if gene == name)
        out[name] = (tuple(x.shape), *_standardize_and_analyze(x.to(device) if device is not None else x,
                                                               axes[1:] if group.stacked else axes, transform,
                                                               keep, params))
    return out


class _GroupBlocks:
    """A group's analyzed layers as they arrive (stacked genes: one buffer for all layers, no torch.stack copy),
    then its records once the depth axis is transformed."""

    def __init__(self, group: GeneGroup):
        self.group = group
        self.layers = 0
        self.blocks: dict[str, torch.Tensor] = {}
        self.stats: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {n: ([], []) for n, _, _ in group.genes}
        self.source_shapes: dict[str, list[int]] = {}

    def add(self, parts: Mapping[str, tuple]) -> None:
        self.layers += 1
        for name, (shape, block, std, mean) in parts.items():
            if not self.group.stacked:
                self.blocks[name] = block
                self.source_shapes[name] = list(shape)
            else:
                if name not in self.blocks:
                    self.blocks[name] = block.new_empty((self.group.depth, *block.shape))
                    self.source_shapes[name] = [self.group.depth, *shape]  # type: ignore[list-item]
                self.blocks[name][len(self.stats[name][0])] = block
            self.stats[name][0].append(std)
            self.stats[name][1].append(mean)

    def records(self, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
                dtype: torch.dtype) -> Iterator[GeneRecord]:
        import torch

        group = self.group
        for name, axes, fan_in in group.genes:
            stds, means = self.stats.pop(name)
            if name not in self.blocks or (group.stacked and len(stds) != group.depth):
                raise ValueError(f"gene '{name}': read {len(stds)} layers, expected {group.depth or 1}")
            coeffs = self.blocks.pop(name)
            std, mean = (torch.stack(stds), torch.stack(means)) if group.stacked else (stds[0], means[0])
            if group.stacked:
                kept_depth = kept_size(group.depth, DEPTH, keep)  # type: ignore[arg-type]
                coeffs = _analyze_depth(coeffs, transform, kept_depth, params)
            coeffs = coeffs.to(dtype)
            if coeffs.untyped_storage().nbytes() > 2 * coeffs.nbytes:
                coeffs = coeffs.clone()  # the kept depth rows of the layers' buffer: let the rest of it go now
            yield GeneRecord(name, axes, tuple(self.source_shapes[name]), coeffs, mean.float(), std.float(), fan_in)


def _analyze_depth(blocks: torch.Tensor, transform: Transform, keep: int, params: Mapping[str, Any]) -> torch.Tensor:
    """The depth axis's low-frequency block of the stacked layer blocks, written over the buffer's first rows
    (column slices at a time: each slice is read whole before its kept rows are written), so a big gene needs no
    second buffer."""
    flat = blocks.reshape(blocks.shape[0], -1)
    if flat.numel() <= CHUNK_ELEMENTS or not flat.is_contiguous():
        return transform.analyze(blocks, 0, keep, **params)
    step = max(1, CHUNK_ELEMENTS // flat.shape[0])
    for start in range(0, flat.shape[1], step):
        part = transform.analyze(flat[:, start:start + step], 0, keep, **params)
        flat[: part.shape[0], start:start + step] = part
    return flat[:keep].reshape(keep, *blocks.shape[1:])


def extract_groups(groups: Iterable[GeneGroup], transform: Transform, keep: Mapping[str, float],
                   params: Mapping[str, Any], dtype: torch.dtype | None = None, device: Any = None,
                   workers: int = 1) -> Iterator[GeneRecord]:
    """Records one gene group at a time, so a caller that stores each as it comes holds one group in memory.

    With ``workers`` > 1 on a CPU, that many layers are read and transformed at once, each on one torch thread:
    FFTs and small products scale better across layers than inside one. Layers flow across group boundaries,
    and a few more are queued than there are workers, so the workers keep transforming the next group's layers
    while this thread finishes a group (its depth transform) and the caller stores its records. ``dtype``: of the
    stored coefficients (None: float32).
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype

    def layers() -> Iterator[tuple[GeneGroup, Callable[[], Mapping[str, torch.Tensor]] | None]]:
        for group in groups:
            empty = True
            for read in group.layers():
                empty = False
                yield group, read
            if empty:
                yield group, None

    def analyze(item: tuple[GeneGroup, Any]) -> tuple[GeneGroup, dict[str, tuple]]:
        return item[0], _analyze_layer(item[0], item[1], transform, keep, params, device)

    with single_threaded_pool(workers, device) as pool:
        current: _GroupBlocks | None = None
        for group, parts in ordered_map(analyze, layers(), pool, ahead=2 * workers):
            if current is None or group is not current.group:
                if current is not None:
                    yield from current.records(transform, keep, params, dtype)
                    release_memory()
                current = _GroupBlocks(group)
            current.add(parts)
            if current.layers % TRIM_EVERY == 0:
                release_memory()
        if current is not None:
            yield from current.records(transform, keep, params, dtype)


def extract_gene(gene: Gene, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
                 dtype: torch.dtype | None = None) -> GeneRecord:
    (record,) = extract_groups(genome_groups({gene.name: gene}), transform, keep, params, dtype)
    return record


def extract(genome: Genome, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
            dtype: torch.dtype | None = None) -> dict[str, GeneRecord]:
    return {r.name: r for r in extract_groups(genome_groups(genome), transform, keep, params, dtype)}


__all__ = ["extract", "extract_gene", "extract_groups", "gene_groups", "kept_size", "parse_keep"]
