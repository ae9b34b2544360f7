"""Importance scores a learngene carries from calibration, and the orders they define.

Calibration (``zoo.calibration``) runs the source model on a little data once, at ``learngene add``, and records
per axis how much each unit matters: one score per residual channel (``hidden``, shared by every layer), per
feed-forward neuron and per attention head of each layer, and per block (``depth``: how much the block changes
the residual stream). Materialization then needs no data: the ``ordered`` resize strategy keeps or replicates the
units in that order (``zoo_plugins.transforms.ordered``).

Scores are stored as safetensors bytes; the metadata (what data, how many tokens, how long) is in its JSON
header, so ``learngene list`` / ``show`` read it without decoding any tensor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .genes import GeneGroup, resizable
from .hf.safetensors_io import load, save

META_KEY = "zoo.calibration"
# Default calibration size: orders stop changing well before this (docs/ablations.md measures it).
DEFAULT_SAMPLES = 64


@dataclass
class Calibration:
    """Importance scores by role. ``hidden``: [hidden]; ``depth``: [layers]; per-layer roles (``ffn``,
    ``heads``, ``kv_heads``): [layers, units]. ``meta`` says how they were measured."""

    scores: dict[str, Any]  # role -> torch.Tensor (float32)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        tensors = {role: t.detach().to("cpu").float().contiguous() for role, t in sorted(self.scores.items())}
        return save(tensors, metadata={META_KEY: json.dumps(self.meta, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes) -> Calibration:
        return cls(dict(load(bytes(data))), read_meta(data))


def read_meta(data: bytes) -> dict[str, Any]:
    """The calibration's metadata from the safetensors header alone (no tensor is decoded)."""
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8:8 + length]))
    return json.loads(header.get("__metadata__", {}).get(META_KEY, "{}"))


# -- orders ------------------------------------------------------------------------------------------------------
PINNED = float("inf")


def descending(scores: Any) -> Any:
    """Indices from the most to the least important (ties: the lower index first, so orders are reproducible)."""
    import torch

    return torch.argsort(-scores.double(), dim=-1, stable=True)


def depth_order(calibration: Calibration, layers: int, pin_ends: bool = True) -> Any:
    """Layers from the most to the least worth keeping: the first and the last block always (they read the
    embeddings and write the output; ``pin_ends``), then the others by block influence; without an influence
    score, layers spread evenly over depth (the order of a repeated bisection)."""
    import torch

    influence = calibration.scores.get("depth")
    if influence is None or influence.numel() != layers:
        order: list[int] = [0, layers - 1] if layers > 1 else [0]
        step = layers - 1
        while len(order) < layers:
            step = max(1, step // 2)
            order += [i for i in range(0, layers, step) if i not in order]
        return torch.tensor(order[:layers])
    score = influence.double().clone()
    if pin_ends:
        score[0] = score[-1] = PINNED
    return descending(score)


def contiguous_cut(calibration: Calibration, layers: int, keep: int) -> Any:
    """The ``keep`` layers left when the run of ``layers - keep`` consecutive blocks over which the residual stream
    changes least (the smallest angular distance between the run's input and its output) is dropped; the first
    block and the last are never dropped (they read the embeddings and write the output). None without the
    measurement (``stream_distance``, recorded by calibration since it was added) or when every layer stays."""
    import torch

    distance = calibration.scores.get("stream_distance")
    cut = layers - keep
    if distance is None or distance.shape != (layers + 1, layers + 1) or cut <= 0 or keep < 2:
        return None
    starts = range(1, keep)  # the run starts after the first block and ends before the last
    best = min(starts, key=lambda s: (float(distance[s, s + cut]), s))
    return torch.cat([torch.arange(best), torch.arange(best + cut, layers)])


def unit_scores(calibration: Calibration, role: str, layer: int | None, units: int) -> Any:
    """The scores of the ``units`` units of ``role`` (``hidden``: the same for every layer; ``ffn``, ``heads``:
    per layer; ``kv_heads``: the sum over each group's query heads), or None when calibration has none for that
    many units."""
    if role == "hidden":
        scores = calibration.scores.get("hidden")
    else:
        table = calibration.scores.get("heads" if role == "kv_heads" else role)
        scores = None if table is None or layer is None else table[layer]
        if role == "kv_heads" and scores is not None and scores.numel() % units == 0:
            scores = scores.reshape(units, -1).sum(-1)
    return scores if scores is not None and scores.numel() == units else None


def top_units(scores: Any, keep: int) -> Any:
    """The ``keep`` most important units, in their source order (ascending index)."""
    return descending(scores)[:keep].sort().values


def top_heads(head_scores: Any, groups: int, keep_groups: int, keep_per_group: int) -> Any:
    """Grouped-query heads: the ``keep_groups`` KV groups whose query heads score most in total, and in each the
    ``keep_per_group`` best query heads, as indices into the flattened ``(groups, q_per_kv)`` axes, in source
    order. Heads never leave their group: a query head reads its group's keys and values."""
    import torch

    scores = head_scores.double().reshape(groups, -1)
    per_group = scores.shape[1]
    kept_groups = top_units(scores.sum(-1), keep_groups)
    rows = [top_units(scores[g], keep_per_group) + g * per_group for g in kept_groups.tolist()]
    return torch.cat(rows)


def select_units(tensor: Any, axes: tuple[str, ...], calibration: Calibration, layer: int | None,
                 kept: dict[str, int]) -> Any:
    """One layer of a gene with only the ``kept[role]`` most important units of each role that has scores
    (grouped-query heads as groups); axes without scores keep their first units (as the transform's crop would)."""
    out = tensor
    skip = False
    for dim, role in enumerate(axes):
        if skip:
            skip = False
            continue
        n = out.shape[dim]
        k = kept.get(role, n)
        if role == "kv_heads" and dim + 1 < len(axes) and axes[dim + 1] == "q_per_kv":
            qg = out.shape[dim + 1]
            scores = unit_scores(calibration, "heads", layer, n * qg)
            kq = kept.get("q_per_kv", qg)
            if scores is not None and (k < n or kq < qg):
                flat = top_heads(scores, n, k, kq)
                shape = list(out.shape)
                merged = out.reshape(*shape[:dim], n * qg, *shape[dim + 2:])
                shape[dim], shape[dim + 1] = k, kq
                out = merged.index_select(dim, flat.to(out.device)).reshape(shape)
            skip = True
            continue
        if k >= n:
            continue
        scores = unit_scores(calibration, role, layer, n)
        if scores is not None:
            out = out.index_select(dim, top_units(scores, k).to(out.device))
        else:
            out = out.narrow(dim, 0, k)
    return out


def ordered_groups(groups: Any, calibration: Calibration, kept: Any) -> Any:
    """Gene groups whose layers are read with only their most important units (``kept(role, n)``: how many of
    ``n`` units of ``role`` a learngene stores): what an ordered learngene at keep < 1 stores. The same units are
    kept for every reader and writer of an axis, so what is stored is a consistent sub-network."""
    for group in groups:
        def layers(group: Any = group) -> Any:
            axes = {name: (axes[1:] if group.stacked else axes) for name, axes, _ in group.genes}
            for layer, read in enumerate(group.layers()):
                def selected(read: Any = read, layer: int = layer) -> dict[str, Any]:
                    out = {}
                    for name, t in read().items():
                        sizes = {role: kept(role, t.shape[d]) for d, role in enumerate(axes[name])
                                 if resizable(role)}  # vocabularies and other fixed axes are stored whole
                        out[name] = select_units(t, axes[name], calibration, layer if group.stacked else None, sizes)
                    return out
                yield selected
        yield GeneGroup(group.genes, group.depth, layers)
