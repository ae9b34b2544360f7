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

    def loaded(self) -> GeneRecord:
        """This record with its tensors in memory (a record from ``Registry.genes(lazy=True)`` reads them now)."""
        return self


class LazyGeneRecord(GeneRecord):
    """A stored gene's metadata, whose tensors are read from the registry only by :meth:`loaded`, each time:
    a caller streaming a big learngene holds one gene's tensors at a time, never all of them."""

    def __init__(self, name: str, axes: tuple[str, ...], source_shape: tuple[int, ...], fan_in: int,
                 load: Any):
        self.name, self.axes, self.source_shape, self.fan_in = name, axes, source_shape, fan_in
        self._load = load

    def loaded(self) -> GeneRecord:
        return self._load()

    def __getattr__(self, attr: str) -> Any:
        if attr in ("coeffs", "mean", "std"):  # a caller that does not stream: read it (not cached)
            return getattr(self._load(), attr)
        raise AttributeError(attr)


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
    calibration: bytes | None = None  # importance scores (zoo.importance.Calibration bytes); None: not calibrated
    genes: int = 0
    nbytes: int = 0
    gene_summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def calibration_meta(self) -> dict[str, Any] | None:
        from zoo.importance import read_meta

        return read_meta(self.calibration) if self.calibration else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat(timespec="seconds")
        data["calibration"] = self.calibration_meta
        return data
