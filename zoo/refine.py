"""FRONT+'s spectral regularizer: how much of a model's (standardized) weights lies outside the learngene's block.

``spectral_penalty(model, spec)`` is a plain differentiable scalar: add ``lam * penalty`` to any task loss and the
optimizer moves knowledge into the coefficients the learngene keeps. It reuses extraction's own steps (the
adapter's genome, the per-layer z-score of :func:`zoo.extraction.extract_gene`, the transform plugin's ``analyze``
with the same kept sizes), so "inside the block" means exactly what ``zoo learngene add`` stores.

**Exact energy for any linear transform.** The kept block of a gene is ``c = A z`` with ``A`` the per-axis
analysis operators (a Kronecker product). What the learngene can represent is the row space of ``A``; the energy
inside is the squared norm of ``z``'s orthogonal projection onto it, ``||(A A^T)^{-1/2} A z||^2``, and the energy
outside is ``||z||^2`` minus that: the squared distance from ``z`` to what the block can describe. For the
orthonormal DCT ``A A^T = I``, so this is ``||z||^2 - ||c||^2``. The DWT's gain-free approximation is not
orthonormal (each level divides out ``sum(dec_lo)``; odd lengths in periodization mode and the padded modes are
not even orthogonal), so ``||c||^2`` would be wrong there; the per-axis ``(A A^T)^{-1/2}`` (``k x k``, computed
once from the plugin's own ``analyze`` of an identity) makes it exact for every transform and mode.

**Scale.** Each gene contributes the *fraction* of its energy outside (a number in [0, 1]); the penalty is the
mean over the genes the learngene truncates. So lambda does not depend on model size, and 0.3 means "30% of the
standardized energy is in frequencies the learngene drops".
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .extraction import kept_size, parse_keep
from .genes import Genome, resizable
from .inputs import check_params
from .plugin_host import catalog
from .resolver import find_adapter
from .stats import EPS, broadcast_stat, std_mean
from .transforms import apply_matrix

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LearngeneSpec:
    """Which learngene the penalty is measured against: transform name, keep ratios and transform parameters."""

    transform: str = "dct"
    keep: Any = 0.5
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, info: Any) -> LearngeneSpec:
        """The spec of a stored learngene (a :class:`zoo.LearngeneInfo`)."""
        return cls(info.transform, dict(info.keep), dict(info.transform_params))

    def resolved(self) -> tuple[Any, dict[str, float], dict[str, Any]]:
        """(transform plugin, keep ratios, parameters with defaults), validated as ``zoo learngene add`` does."""
        transform = catalog().transform(self.transform)
        return transform, parse_keep(self.keep), check_params(transform, dict(self.params))


def _freeze(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


@functools.lru_cache(maxsize=256)
def _whitener(transform: Any, n: int, keep: int, params_items: tuple) -> torch.Tensor | float | None:
    """``(A A^T)^{-1/2}`` for the axis operator ``A`` (``[keep', n]``) of ``transform``: None when ``A`` keeps the
    whole axis, a float when ``A A^T`` is a multiple of the identity, else a matrix (float64, CPU)."""
    import torch

    params = dict(params_items)
    a = transform.analyze(torch.eye(n, dtype=torch.float64), 0, keep, **params)
    if a.shape[0] == n:  # the whole axis is kept (an invertible square transform): nothing lies outside
        return None
    gram = a @ a.T
    scale = gram.diagonal().mean()
    if torch.allclose(gram, scale * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-10 * float(scale)):
        return float(scale.rsqrt())
    values, vectors = torch.linalg.eigh(gram)
    inv_sqrt = torch.where(values > 1e-12 * values.max(), values.clamp_min(1e-300).rsqrt(), torch.zeros_like(values))
    return (vectors * inv_sqrt) @ vectors.T


def gene_fractions(genome: Genome, transform: Any, keep: Mapping[str, float], params: Mapping[str, Any],
                   genes: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Per gene, the fraction of its standardized energy outside the kept block (differentiable). Genes the
    learngene keeps whole (no resizable axis, or keep 1 on all of them) are left out: their fraction is 0; so are
    genes whose layers are all constant (z-scored to zero). A *nearly* constant gene (a freshly initialized
    LayerNorm after one step) is z-scored to unit energy like any other: refinement is meant for trained sources."""
    import torch

    wanted = None if genes is None else set(genes)
    frozen = _freeze(params)
    out: dict[str, torch.Tensor] = {}
    for name, gene in genome.items():
        if wanted is not None and name not in wanted:
            continue
        x = gene.tensor
        if not x.is_floating_point() or x.numel() <= 1:
            continue
        x = x if x.dtype == torch.float64 else x.float()
        axes = [(dim, kept_size(x.shape[dim], role, keep)) for dim, role in enumerate(gene.axes) if resizable(role)]
        whiteners = [(dim, _whitener(transform, x.shape[dim], k, frozen)) for dim, k in axes]
        if all(w is None for _, w in whiteners):
            continue
        std, mean = std_mean(x, gene.stacked)  # FRONT's z-score, exactly as extraction does it
        z = (x - broadcast_stat(mean, x, gene.stacked)) / broadcast_stat(std.clamp_min(EPS), x, gene.stacked)
        block = z
        for dim, k in axes:
            block = transform.analyze(block, dim, k, **params)
        scale = 1.0
        for dim, w in whiteners:
            if isinstance(w, float):
                scale *= w
            elif w is not None:
                block = apply_matrix(block, w.to(device=block.device, dtype=block.dtype), dim)
        total = z.square().sum()
        if not total.item():  # constant layers only (a fresh LayerNorm): no energy to place, so no fraction
            continue
        inside = block.square().sum() * scale**2
        out[name] = (total - inside) / total
    return out


def genome_penalty(genome: Genome, spec: LearngeneSpec, genes: Iterable[str] | None = None) -> torch.Tensor:
    """Mean fraction of energy outside the kept block over the genes the learngene truncates."""
    import torch

    transform, keep, params = spec.resolved()
    fractions = gene_fractions(genome, transform, keep, params, genes)
    if not fractions:
        device = next((g.tensor.device for g in genome.values()), torch.device("cpu"))
        return torch.zeros((), device=device)
    return torch.stack(list(fractions.values())).mean()


def model_genome(model: torch.nn.Module, config: Mapping[str, Any] | None = None) -> tuple[Genome, Any]:
    """The model's genes as differentiable views of its parameters, and its adapter (found from the config)."""
    if config is None:
        hf_config = getattr(model, "config", None)
        if hf_config is None:
            raise ValueError("give the model's zoo config: this model has no .config to find its adapter from")
        config = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    adapter = find_adapter(dict(config))
    return adapter.to_genome(model.state_dict(keep_vars=True), config), adapter


def spectral_penalty(model: torch.nn.Module, spec: LearngeneSpec | Any, config: Mapping[str, Any] | None = None,
                     genes: Iterable[str] | None = None) -> torch.Tensor:
    """FRONT+'s regularizer for ``model``: a differentiable scalar on the model's device.

    ``spec`` is a :class:`LearngeneSpec` or a stored ``LearngeneInfo``; ``config`` is the zoo/HF config dict
    (default: ``model.config``); ``genes`` restricts the penalty to those gene names (e.g. the source's genes when a
    training head was added). ``loss = task_loss + lam * spectral_penalty(model, spec)``.
    """
    if not isinstance(spec, LearngeneSpec):
        spec = LearngeneSpec.of(spec)
    genome, _ = model_genome(model, config)
    return genome_penalty(genome, spec, genes)


def energy_in_block(model: torch.nn.Module, spec: LearngeneSpec | Any, config: Mapping[str, Any] | None = None,
                    genes: Iterable[str] | None = None) -> dict[str, float]:
    """Report: ``mean`` (1 - the penalty: the average gene's share of energy inside the block) and ``overall``
    (all truncated genes' energy inside / their total, so large genes weigh more)."""
    import torch

    if not isinstance(spec, LearngeneSpec):
        spec = LearngeneSpec.of(spec)
    transform, keep, params = spec.resolved()
    with torch.no_grad():
        genome, _ = model_genome(model, config)
        fractions = gene_fractions(genome, transform, keep, params, genes)
        sizes = {n: genome[n].tensor.numel() for n in fractions}  # z-scored: energy = element count
    if not fractions:
        return {"mean": 1.0, "overall": 1.0}
    total = sum(sizes.values())
    return {"mean": 1.0 - float(torch.stack(list(fractions.values())).mean()),
            "overall": 1.0 - sum(float(f) * sizes[n] for n, f in fractions.items()) / total}


__all__ = ["LearngeneSpec", "energy_in_block", "gene_fractions", "genome_penalty", "model_genome",
           "spectral_penalty"]
