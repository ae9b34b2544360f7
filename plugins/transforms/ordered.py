"""The ordered learngene: each axis in the order of its units' importance, so that "keep the first coefficients"
keeps what matters.

FRONT keeps the first DCT coefficients of every axis. That compacts energy on smooth, ordered axes (positions,
a little depth), but a neuron axis's order is arbitrary, so in the DCT basis it looks like noise and a crop keeps
about what a random rotation would (docs/spectra.md). Here every width axis is ranked instead, by calibration
(``zoo.calibration``): one ranking of the residual channels shared by every layer, and per layer a ranking of the
feed-forward neurons and of the attention heads (grouped-query heads as groups). The same units are kept for
every reader and writer of an axis, and units are never blended across a nonlinearity.

* transform ``ordered``: the identity basis. At keep 1 the learngene stores the source's weights as they are (and
  materializing at the source size gives the source back, exactly); at a smaller keep it stores the most
  important units of each ranked axis, in their source order. It declares ``needs_calibration``, so ``learngene
  add`` calibrates the source first, and stores the scores with the learngene.
* strategy ``ordered``: builds the target from those weights. Shrinking keeps the most important units of each
  axis and the layers chosen by ``depth`` (by default the first ones and the last; for a family whose adapter
  declares a ``depth_rule``, that one: Llama drops the run of deep blocks that changes the stream least; see
  docs/ablations.md).
  Growing a pre-norm model adds units that compute nothing yet (zero residual channels, zero-output neurons and
  heads) and copies layers with their writers zeroed, so the grown model computes the source's function. Growing a
  post-norm one copies units and layers evenly (Net2Net, as the ``duplicate`` baseline does; copying the most
  important ones first measured worse), divides every copied input so that linear maps compute what they did, and
  breaks the copies' symmetry with HyperCloning's +N/-N noise on the copied inputs, which cancels exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from zoo import InvalidConfigError, hookimpl
from zoo.genes import DEPTH, check_fixed_axes, resizable
from zoo.importance import Calibration, contiguous_cut, depth_order, descending, top_heads, top_units, unit_scores
from zoo.stats import broadcast_stat
from zoo_plugins.strategies.baselines import duplicate_indices, select_indices

if TYPE_CHECKING:
    import torch

# axes whose first units are the ones to keep when shrinking (a table indexed by position)
LEADING_ROLES = frozenset({"positions", "registers"})


class OrderedTransform:
    name = "ordered"
    description = "identity basis, units ranked by calibration: keep < 1 stores the most important; keep 1 is exact"
    default_strategy = "ordered"
    needs_calibration = True
    strategies = ("ordered",)  # at keep < 1 only this strategy knows which source units were stored

    def analyze(self, x: torch.Tensor, dim: int, keep: int, **params: Any) -> torch.Tensor:
        return x.narrow(dim, 0, min(keep, x.shape[dim]))

    def synthesize(self, coeffs: torch.Tensor, dim: int, size: int, **params: Any) -> torch.Tensor:
        import torch

        n = coeffs.shape[dim]
        if size <= n:
            return coeffs.narrow(dim, 0, size)
        pad = list(coeffs.shape)
        pad[dim] = size - n
        return torch.cat([coeffs, coeffs.new_zeros(pad)], dim=dim)


def _stored_scores(calibration: Calibration, role: str, layer: int | None, source: int,
                   stored: int) -> torch.Tensor | None:
    """Scores of the units a learngene stores along this axis (the ``stored`` best of ``source``, in source
    order), or None for axes calibration does not rank."""
    scores = unit_scores(calibration, role, layer, source)
    if scores is None:
        return None
    return scores if stored == source else scores[top_units(scores, stored)]


def _ranked_index(scores: torch.Tensor, m: int) -> torch.Tensor:
    """``m`` of these units: the most important ones, in their order; or every unit, then the most important again."""
    import torch

    n = scores.numel()
    if m <= n:
        return top_units(scores, m)
    return torch.cat([torch.arange(n), descending(scores)[torch.arange(m - n) % n]])


def _unit_index(calibration: Calibration, role: str, layer: int | None, source: int, stored: int,
                m: int) -> torch.Tensor | None:
    """Which stored unit each of ``m`` target units takes (None: all of them, as they are)."""
    import torch

    if m == stored == source:
        return None
    scores = _stored_scores(calibration, role, layer, source, stored)
    if scores is not None:
        return _ranked_index(scores, m)
    if m == stored:
        return None
    if m < stored:
        if role in LEADING_ROLES:
            return torch.arange(m)
        return select_indices(stored, m)  # e.g. head_dim: an even spread keeps RoPE's frequencies spread
    return duplicate_indices(stored, m)


def _head_map(calibration: Calibration, layer: int | None, source: tuple[int, int], stored: tuple[int, int],
              target: tuple[int, int], spread: bool = False) -> torch.Tensor | None:
    """Grouped-query heads: flat indices into the stored ``(kv_heads, q_per_kv)`` for the target's, groups and
    the heads within each group ranked by score (a query head stays in its group). ``spread``: a growing axis
    copies its units evenly, exactly as k and v's ``kv_heads`` axis does on its own (the two must agree)."""
    import torch

    if stored == target == source:
        return None
    (gs, qs), (gn, qn), (gm, qm) = source, stored, target
    scores = unit_scores(calibration, "heads", layer, gs * qs)
    if scores is None:
        scores = torch.ones(gs * qs)
    if (gn, qn) != (gs, qs):
        scores = scores[top_heads(scores, gs, gn, qn)]
    grid = scores.reshape(gn, qn)

    def pick(values: torch.Tensor, m: int) -> torch.Tensor:
        return duplicate_indices(values.numel(), m) if spread and m > values.numel() else _ranked_index(values, m)

    groups = pick(grid.sum(-1), gm)
    return torch.cat([pick(grid[g], qm) + g * qn for g in groups.tolist()])


def _layer_map(order: torch.Tensor, layers: int, m: int) -> torch.Tensor:
    """Source layer of each of ``m`` target layers, in depth order: the ``m`` most worth keeping, or every layer
    and then copies of the most influential ones (each copy next to its original)."""
    import torch

    if m <= layers:
        return order[:m].sort().values
    extra = order[torch.arange(m - layers) % layers]
    return torch.cat([torch.arange(layers), extra]).sort(stable=True).values


@dataclass(frozen=True)
class OrderedStrategy:
    """``noise``: std of the symmetry-breaking noise on replicated inputs, relative to the gene's std (0: none).
    ``norm_gain``: scale a norm's gain by ``sqrt(rho * D / d)`` when residual channels are dropped (rho: the
    energy share of the kept channels at the norm's input), so its kept outputs keep their scale. ``depth``:
    which source layers a shallower target keeps, one of ``DEPTH_RULES`` (see :func:`_depth_ranking`); ``auto``
    (the default) takes the family's ``depth_rule`` as calibration recorded it, else ``ends``. ``stack``, when
    growing depth: ``copy`` (a copied layer as it is), ``zero`` (the copy's writers into the residual stream start
    at zero: the block adds nothing until trained) or ``half`` (the original's and the copy's writers halved);
    ``grow_depth``: which layers are copied, ``influence`` (the most influential) or ``spread`` (evenly, as
    the duplicate baseline stacks); ``grow_units``: which units are copied when an axis grows, ``important``
    (the most important first) or ``spread`` (evenly over the axis); ``grow``: what a grown width axis gets,
    ``copy`` (copied units, their inputs divided, with the noise above) or ``fresh`` (new units that compute nothing
    yet: zero residual channels, new neurons and heads with random inputs and zero outputs; exact at any factor;
    grouped-query heads are still copied, within their groups, as k and v must map them alike).
    ``grow`` and ``stack`` default to ``auto``: ``fresh`` and ``zero`` for a pre-norm source (GPT-2, Llama, ViT:
    the grown model computes the source's function), ``copy`` for a post-norm one (BERT), as docs/ablations.md
    measured."""

    name: str = "ordered"
    description: str = ("keep the most important units and layers (calibrated order); grow function-preserving: "
                        "new units and zero-output layer copies (pre-norm) or Net2Net copies with noise (post-norm)")
    needs_calibration: bool = True
    noise: float = 0.01
    norm_gain: bool = False
    depth: str = "auto"
    stack: str = "auto"
    grow_depth: str = "spread"
    grow_units: str = "spread"
    grow: str = "auto"
    calibration: Calibration | None = None
    seed: int = 0

    @property
    def keeps_last_layer(self) -> bool:
        """A shallower target still ends with the source's last block, so genes tuned to its output (a decoder's
        final norm, ``zoo.calibrate``) fit and are transferred."""
        return self.depth != "first"

    def for_learngene(self, calibration: Calibration | None) -> OrderedStrategy:
        """This strategy bound to a learngene's calibration (zoo does this before materializing)."""
        bound = replace(self, calibration=calibration)
        if bound.depth == "auto":
            bound = replace(bound, depth=str((calibration.meta if calibration else {}).get("depth_rule") or "ends"))
        pre_norm = _pre_norm(calibration)
        if bound.grow == "auto":
            bound = replace(bound, grow="fresh" if pre_norm else "copy")
        if bound.stack == "auto":
            bound = replace(bound, stack="zero" if pre_norm else "copy")
        return bound

    def _calibration(self) -> Calibration:
        if self.calibration is None:
            raise InvalidConfigError("resize strategy 'ordered' needs a calibrated learngene (one added with "
                                     "--transform ordered); for this one use --strategy spectral, select or duplicate")
        return self.calibration

    def resize_weights(self, record: Any, target_shape: Sequence[int], transform: Any,
                       params: Mapping[str, Any]) -> torch.Tensor:
        """Target weights from the stored units of one gene (all of them at keep 1: the source's weights)."""
        import torch

        if getattr(transform, "name", None) != "ordered":
            raise InvalidConfigError(f"resize strategy 'ordered' needs an ordered learngene; this one's transform is "
                                     f"'{transform.name}' (use --strategy spectral, select or duplicate)")
        calibration = self._calibration()
        w = record.coeffs.to(torch.float32)
        mean, std = record.mean.float().to(w.device), record.std.float().to(w.device)
        w = w * broadcast_stat(std, w, record.stacked) + broadcast_stat(mean, w, record.stacked)
        gen = torch.Generator().manual_seed(self.seed + sum(map(ord, record.name)))
        if not record.stacked:
            return self._layer(w, record.axes, tuple(target_shape), tuple(record.source_shape), record, None, gen)
        n, m = int(w.shape[0]), int(target_shape[0])
        if m > n and self.grow_depth == "spread":
            layers = duplicate_indices(n, m)
        else:
            layers = _layer_map(_depth_ranking(calibration, self.depth, n, m), n, m)
        out = torch.stack([self._layer(w[int(src)], record.axes[1:], tuple(target_shape[1:]),
                                       tuple(record.source_shape[1:]), record, int(src), gen) for src in layers])
        if m > n and self.stack in ("zero", "half") and _writes_residual(record):
            out = out * _stack_scale(layers, self.stack).to(out.device).reshape(-1, *([1] * (out.dim() - 1)))
        return out

    def replicas(self, record: Any, role: str, size: int) -> torch.Tensor | None:
        """How many target units copy each one's stored unit along ``role`` (None: none is a copy: shrinking, or
        growing with fresh units)."""
        import torch

        if role not in record.axes or role == DEPTH or role in LEADING_ROLES:
            return None
        dim = record.axes.index(role)
        stored, source = int(record.coeffs.shape[dim]), int(record.source_shape[dim])
        if size <= stored or (self.grow == "fresh" and role in FRESH_ROLES):
            return None
        if self.grow_units == "spread":
            index = duplicate_indices(stored, size)
        else:
            index = _unit_index(self._calibration(), role, None, source, stored, size)
            if index is None:
                return None
        return torch.bincount(index, minlength=stored)[index].float()

    def _layer(self, w: torch.Tensor, axes: tuple[str, ...], target: tuple[int, ...], source: tuple[int, ...],
               record: Any, layer: int | None, gen: torch.Generator) -> torch.Tensor:
        """One layer: each axis indexed to its target length (a grouped-query pair of axes as one axis)."""
        calibration = self._calibration()
        check_fixed_axes(axes, w.shape, target)
        first_input = len(axes) - record.fan_in
        dim = 0
        kept_hidden = None
        while dim < len(axes):
            role = axes[dim]
            pair = role == "kv_heads" and dim + 1 < len(axes) and axes[dim + 1] == "q_per_kv"
            if not resizable(role):
                dim += 1
                continue
            if pair:
                index = _head_map(calibration, layer, source[dim:dim + 2], tuple(w.shape[dim:dim + 2]),
                                  target[dim:dim + 2], spread=self.grow_units == "spread")
                groups = tuple(w.shape[dim:dim + 2])
                w = w.reshape(*w.shape[:dim], groups[0] * groups[1], *w.shape[dim + 2:])
            elif self.grow == "fresh" and role in FRESH_ROLES and target[dim] > w.shape[dim]:
                w = _grow_fresh(w, dim, target[dim], role, dim >= first_input, record, gen)
                dim += 1
                continue
            elif self.grow_units == "spread" and target[dim] > w.shape[dim]:
                index = duplicate_indices(w.shape[dim], target[dim])  # every unit copied as evenly as possible
            else:
                index = _unit_index(calibration, role, layer, source[dim], w.shape[dim], target[dim])
                if role == "hidden":
                    kept_hidden, stored_hidden = index, w.shape[dim]
            if index is not None:
                n = w.shape[dim]
                w = w.index_select(dim, index.to(w.device))
                if dim >= first_input and len(index) > n:  # replicated inputs: divide, then break the symmetry
                    w = _split_inputs(w, dim, index, n, self.noise, gen)
            if pair:
                w = w.reshape(*w.shape[:dim], target[dim], target[dim + 1], *w.shape[dim + 1:])
                dim += 2
            else:
                dim += 1
        if self.norm_gain and _is_norm_gain(record) and kept_hidden is not None and target[-1] < source[-1]:
            w = w * _gain_fix(calibration, record, layer, source[-1], stored_hidden, kept_hidden)
        return w

    def resize(self, coeffs: torch.Tensor, axes: Sequence[str], target_shape: Sequence[int], transform: Any,
               params: Mapping[str, Any]) -> torch.Tensor:
        """The ResizeStrategy protocol on standardized values (no fan-in or layer order is known here): the most
        important units kept or replicated; zoo's pipeline calls :meth:`resize_weights`."""
        import torch

        check_fixed_axes(axes, coeffs.shape, target_shape)
        z = coeffs
        for dim, role in enumerate(axes):
            n, m = int(z.shape[dim]), int(target_shape[dim])
            if n != m:
                index = torch.arange(m) if m < n else duplicate_indices(n, m)
                z = z.index_select(dim, index.to(z.device))
        return z


def _pre_norm(calibration: Calibration | None) -> bool:
    """Whether the source reads its residual stream through norms and leaves it unnormalized (see
    ``zoo.calibration.structure``); calibrations made before that was recorded tell by a final norm's energy."""
    if calibration is None:
        return False
    return bool(calibration.meta.get("pre_norm", "energy:final_norm.weight" in calibration.scores))


FRESH_ROLES = frozenset({"hidden", "ffn", "heads"})


def _grow_fresh(w: torch.Tensor, dim: int, m: int, role: str, is_input: bool, record: Any,
                gen: torch.Generator) -> torch.Tensor:
    """Grow ``dim`` to ``m`` with new units that compute nothing yet: new residual channels are zero in the stream
    (every writer's new rows, every embedding's new entries and the norms' new gains are zero; readers get random
    columns for them, so gradients reach the writers), and new neurons and heads get random inputs and zero
    outputs. Unlike copies, new units see activations no old unit has, so Adam does not move them in lockstep
    with their originals."""
    import torch

    n = w.shape[dim]
    shape = list(w.shape)
    shape[dim] = m - n
    zeros = w.new_zeros(shape)
    name = record.name
    if is_input:
        new = torch.randn(shape, generator=gen).to(w) * float(w.std()) if role == "hidden" else zeros
    elif role == "hidden":
        if _is_norm_gain(record):
            w, new = w * math.sqrt(n / m), zeros  # zero channels lower the norm's rms by sqrt(n / m)
        elif w.dim() == 1 and "norm" not in name and not name.endswith("bias"):  # LayerScale: keep its scale
            new = zeros + w.mean()
        else:
            new = zeros
    else:
        new = zeros if name.endswith("bias") else torch.randn(shape, generator=gen).to(w) * float(w.std())
    return torch.cat([w, new], dim=dim)


def _split_inputs(w: torch.Tensor, dim: int, index: torch.Tensor, n: int, noise: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Divide each replicated input by its number of copies; with ``noise``, add +N / -N to alternate copies
    (HyperCloning): the copies see identical inputs, so the sum, and the function, is unchanged."""
    import torch

    total = torch.bincount(index.cpu(), minlength=n)[index.cpu()]  # copies of each target unit's source unit
    view = (-1, *([1] * (w.dim() - dim - 1)))
    w = w / total.to(w.dtype).to(w.device).reshape(view)
    if noise <= 0:
        return w
    copy_number = torch.zeros_like(index)
    seen: dict[int, int] = {}
    for j, unit in enumerate(index.tolist()):
        copy_number[j] = seen.get(unit, 0)
        seen[unit] = copy_number[j].item() + 1
    sign = torch.zeros(len(index))
    pair = copy_number.cpu() // 2 * 2 + 1 < total  # a copy with a partner to cancel against
    sign[pair & (copy_number.cpu() % 2 == 0)] = 1.0
    sign[pair & (copy_number.cpu() % 2 == 1)] = -1.0
    # the same noise for both members of a pair: draw per (unit, pair) and index it
    moved = w.movedim(dim, 0)
    base = torch.randn((n, (int(total.max()) + 1) // 2, *moved.shape[1:]), generator=gen) * noise * float(w.std())
    partner = base[index.cpu(), copy_number.cpu() // 2]
    delta = partner * sign.reshape(-1, *([1] * (moved.dim() - 1)))
    return (moved + delta.to(w.dtype).to(w.device)).movedim(0, dim)


DEPTH_RULES = "first, ends, last:K, contiguous, spread, influence"


def _depth_ranking(calibration: Calibration, rule: str, n: int, m: int) -> torch.Tensor:
    """Source layers from the most to the least worth keeping (a shallower target takes the first ``m``), by
    ``rule``: ``first`` (in depth order); ``ends`` (the last block, then the first ones; ``last:1``); ``last:K``
    (the last K blocks, then the first ones); ``contiguous`` (the first and last blocks kept, the run between them
    that changes the stream least dropped, :func:`zoo.importance.contiguous_cut`; ``ends`` for a calibration made
    before that was measured); ``spread`` (evenly over depth, both ends included); ``influence`` (the first and
    the last, then by block influence). Growing always ranks by influence, so the most influential layers are
    copied."""
    import torch

    if m > n or rule == "influence":
        return depth_order(calibration, n, pin_ends=m <= n)
    kept = _kept_layers(calibration, rule, n, m)
    if kept is None:
        raise InvalidConfigError(f"unknown depth rule '{rule}'; valid: {DEPTH_RULES}")
    chosen = set(kept.tolist())
    return torch.cat([kept, torch.tensor([i for i in range(n) if i not in chosen], dtype=torch.long)])


def _kept_layers(calibration: Calibration, rule: str, n: int, m: int) -> torch.Tensor | None:
    """The ``m <= n`` layers a rule keeps, in depth order (None: not a rule)."""
    import torch

    if rule == "contiguous":
        cut = contiguous_cut(calibration, n, m)
        if cut is not None:
            return cut
        rule = "ends"
    if rule == "first":
        return torch.arange(m)
    if rule == "spread":
        return torch.round(torch.linspace(0, n - 1, m, dtype=torch.float64)).long().unique()
    last = 1 if rule == "ends" else _last_blocks(rule)
    if last is None:
        return None
    last = min(last, m)
    return torch.cat([torch.arange(m - last), torch.arange(n - last, n)])


def _last_blocks(rule: str) -> int | None:
    """``last:K``: K, or None for any other rule."""
    head, _, count = rule.partition(":")
    return int(count) if head == "last" and count.isdigit() and int(count) >= 1 else None


def _writes_residual(record: Any) -> bool:
    """A block's writer into the residual stream: its output axis is ``hidden`` (o, down and their biases)."""
    if not record.stacked or len(record.axes) < 2 or record.axes[1] != "hidden" or "norm" in record.name:
        return False
    return record.fan_in > 0 or (len(record.axes) == 2 and record.name.endswith("bias"))


def _stack_scale(layers: torch.Tensor, stack: str) -> torch.Tensor:
    """Per target layer, the factor on its writers: copies of a layer (after the first) 0 for ``zero``; every
    member of a repeated layer 1/k for ``half``."""
    import torch

    counts = torch.bincount(layers)[layers].float()
    if stack == "half":
        return 1.0 / counts
    first = torch.ones(len(layers), dtype=torch.bool)
    first[1:] = layers[1:] != layers[:-1]
    return first.float()


def _is_norm_gain(record: Any) -> bool:
    axes = record.axes[1:] if record.stacked else record.axes
    return axes == ("hidden",) and "norm" in record.name and record.name.endswith("weight")


def _gain_fix(calibration: Calibration, record: Any, layer: int | None, source: int, stored: int,
              index: torch.Tensor) -> float:
    """``sqrt(rho * D / d)``: rho is the energy share, at this norm's input in its source layer, of the ``d``
    channels kept (``index`` into the ``stored`` ones); 1 when calibration measured no energy for this norm."""
    energy = calibration.scores.get(f"energy:{record.name}")
    if energy is None:
        return 1.0
    energy = energy if energy.dim() == 1 else energy[layer or 0]
    units = top_units(calibration.scores["hidden"], stored)  # the stored channels, in source order
    rho = float(energy[units[index.cpu()]].sum())
    return math.sqrt(rho * source / len(index))


@hookimpl
def register_transforms(register):
    register(OrderedTransform())


@hookimpl
def register_resize_strategies(register):
    register(OrderedStrategy())
