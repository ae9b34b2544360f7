"""Plain records the registry returns; they outlive any database session."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import torch


@dataclass
class GeneRecord:
    """One gene of a learngene: its coefficient block and the statistics materialization restores."""

    name: str
    axes: tuple[str, ...]
    source_shape: tuple[int, ...]
    coeffs: torch.Tensor
    mean: torch.Tensor  # per layer for stacked genes, else a scalar
    std: torch.Tensor
    fan_in: int = 0  # trailing axes that are inputs (see zoo.genes.Gene)

    @property
    def stacked(self) -> bool:
        return bool(self.axes) and self.axes[0] == "depth"


@dataclass
class LearngeneInfo:
    name: str
    family: str
    source: str
    source_sha256: str
    source_config: dict[str, Any]
    transform: str
    transform_params: dict[str, Any]
    keep: dict[str, float]
    dtype: str
    zoo_version: str
    created_at: datetime
    parent: str | None = None
    notes: str | None = None
    refinement: dict[str, Any] | None = None  # how it was refined from ``parent`` (zoo refine); None: extracted as is
    genes: int = 0
    nbytes: int = 0
    gene_summary: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat(timespec="seconds")
        return data
