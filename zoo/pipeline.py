"""Learngene extraction and materialization, generic over adapters, transforms and resize strategies.

Extraction, per gene: standardize each layer (FRONT's z-score), transform every resizable axis and keep the
low-frequency block. Materialization, per gene: resize the block to the target shape, then restore each layer's
mean and std. Target layers take the source statistics interpolated over relative depth, so growing depth never
reuses one layer's statistics for every extra layer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .dtypes import DtypeTable
from .errors import InvalidConfigError
from .genes import DEPTH, Gene, GeneGroup, GeneRecord, Genome, fan_in_size, genome_groups, resizable, shape_for
from .transforms import ResizeStrategy, Transform

if TYPE_CHECKING:
    import torch

EPS = 1e-12
T = TypeVar("T")
# Each transform pass over a layer runs in slices of about this many values (see _analyze_in_slices)
SLICE_ELEMENTS = 1 << 20
# Freed memory is handed back to the OS every this many layers (see release_memory)
TRIM_EVERY = 8
# The depth transform of a stacked gene runs over column slices of this many values
CHUNK_ELEMENTS = 1 << 23
# restore: each layer gets the source's mean and std. fan_in: the same, with std scaled by
# sqrt(source fan-in / target fan-in) so activations keep their variance when input widths change. none: the
# resized standardized weights are mapped back with the source statistics as they are.
STATS_RULES = ("restore", "fan_in", "none")
STORAGE_DTYPES = DtypeTable({"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"})


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


def broadcast_stat(stat: torch.Tensor, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    """A per-layer statistic (stacked genes) shaped to broadcast over ``x``; a scalar one as it is."""
    return stat.reshape(-1, *([1] * (x.dim() - 1))) if stacked else stat


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


class WorkerPool(ThreadPoolExecutor):
    """Threads that each run torch ops on one thread; ``workers`` says how many (see :func:`ordered_map`)."""

    def __init__(self, workers: int):
        import torch

        super().__init__(workers, thread_name_prefix="zoo", initializer=torch.set_num_threads, initargs=(1,))
        self.workers = workers


def ordered_map(fn: Callable[[Any], T], items: Iterable[Any], pool: WorkerPool | None,
                ahead: int | None = None) -> Iterator[T]:
    """``map(fn, items)`` in order; with a pool, at most ``ahead`` + 1 items in flight (bounds memory; default:
    one per worker)."""
    if pool is None:
        yield from map(fn, items)
        return
    ahead = max(1, pool.workers - 1) if ahead is None else max(1, ahead)
    running: deque[Future[T]] = deque()
    for item in items:
        running.append(pool.submit(fn, item))
        if len(running) > ahead:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()


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
                    self.source_shapes[name] = [self.group.depth, *shape]
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
                coeffs = _analyze_depth(coeffs, transform, kept_size(group.depth, DEPTH, keep), params)
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


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it in per-thread arenas otherwise, so a streaming
    process's RSS would grow to the sum of its past peaks rather than stay near its current working set)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        return None


_malloc_trim = _find_malloc_trim()


def extract_gene(gene: Gene, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
                 dtype: torch.dtype | None = None) -> GeneRecord:
    (record,) = extract_groups(genome_groups({gene.name: gene}), transform, keep, params, dtype)
    return record


def extract(genome: Genome, transform: Transform, keep: Mapping[str, float], params: Mapping[str, Any],
            dtype: torch.dtype | None = None) -> dict[str, GeneRecord]:
    return {r.name: r for r in extract_groups(genome_groups(genome), transform, keep, params, dtype)}


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


def std_mean(x: torch.Tensor, stacked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Population std and mean of each layer (``stacked``: along the leading axis) or of the whole tensor."""
    import torch

    if stacked:
        return torch.std_mean(x.reshape(x.shape[0], -1), dim=1, correction=0)
    if x.numel() <= 1:
        return torch.zeros((), dtype=x.dtype, device=x.device), x.reshape(-1)[0] if x.numel() else x.sum()
    return torch.std_mean(x, correction=0)


@contextmanager
def single_threaded_pool(workers: int, device: Any = None) -> Iterator[WorkerPool | None]:
    """A pool of ``workers`` threads, each running torch ops on one thread (None: serial, or not on a CPU)."""
    import torch

    if workers <= 1 or (device is not None and torch.device(device).type != "cpu"):
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with WorkerPool(workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


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
                record = records[name].loaded()  # here, on the consumer's thread: a lazy record reads its tensors
                target_shape = _target_shape(name, record, sizes)
                if not (record.stacked and layerwise):
                    yield lambda name=name, record=record, shape=target_shape: (
                        name, None, materialize_gene(record, shape, transform, strategy, params, stats))
                    continue
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


__all__ = ["DEPTH", "STATS_RULES", "extract", "interpolate_depth", "materialize", "parse_keep"]
