"""Plain records the registry returns; they outlive any database session. (Gene records are domain objects that
extraction makes too: they live in :mod:`zoo.genes`.)"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ..genes import GeneRecord, LazyGeneRecord
from ..importance import read_meta


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
        return read_meta(self.calibration) if self.calibration else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat(timespec="seconds")
        data["calibration"] = self.calibration_meta
        return data


__all__ = ["GeneRecord", "LazyGeneRecord", "LearngeneInfo"]
