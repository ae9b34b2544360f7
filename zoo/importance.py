"""Importance scores a learngene carries from calibration, and the orders they define.

Calibration (``zoo.calibration``) runs the source model on a little data once, at ``learngene add``, and records
per axis how much each unit matters: one score per residual channel (``hidden``, shared by every layer), per
feed-forward neuron and per attention head of each layer, and per block (``depth``: how much the block changes
the residual stream). Materialization then needs no data: the ``ordered`` resize strategy keeps or replicates the
units in that order (``zoo_plugins.ordered``).

Scores are stored as safetensors bytes; the metadata (what data, how many tokens, how long) is in its JSON
header, so ``learngene list`` / ``show`` read it without decoding any tensor.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

META_KEY = "zoo.calibration"


@dataclass
class Calibration:
    """Importance scores by role. ``hidden``: [hidden]; ``depth``: [layers]; per-layer roles (``ffn``,
    ``heads``, ``kv_heads``): [layers, units]. ``meta`` says how they were measured."""

    scores: dict[str, Any]  # role -> torch.Tensor (float32)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {role: t.detach().to("cpu").float().contiguous() for role, t in sorted(self.scores.items())}
        return save(tensors, metadata={META_KEY: json.dumps(self.meta, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes) -> Calibration:
        from safetensors.torch import load

        return cls(dict(load(bytes(data))), read_meta(data))


def read_meta(data: bytes) -> dict[str, Any]:
    """The calibration's metadata from the safetensors header alone (no tensor is decoded)."""
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8:8 + length]))
    return json.loads(header.get("__metadata__", {}).get(META_KEY, "{}"))
