"""Per-layer statistics shared by extraction, materialization and refinement: a layer's std and mean, and a
per-layer statistic shaped to broadcast over a stacked gene."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

EPS = 1e-12


def broadcast_stat(stat: torch.Tensor, x: torch.Tensor, stacked: bool) -> torch.Tensor:
    """A per-layer statistic (stacked genes) shaped to broadcast over ``x``; a scalar one as it is."""
    return stat.reshape(-1, *([1] * (x.dim() - 1))) if stacked else stat


def std_mean(x: torch.Tensor, stacked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Population std and mean of each layer (``stacked``: along the leading axis) or of the whole tensor."""
    import torch

    if stacked:
        return torch.std_mean(x.reshape(x.shape[0], -1), dim=1, correction=0)
    if x.numel() <= 1:
        return torch.zeros((), dtype=x.dtype, device=x.device), x.reshape(-1)[0] if x.numel() else x.sum()
    return torch.std_mean(x, correction=0)
