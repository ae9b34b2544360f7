"""Genes that only make sense on top of the source's full depth, and are left to the family's init otherwise.

A decoder's final norm reads the residual stream *after the source's last layer*: its gain weights the channels
that layer writes, so that the (often tied) output embeddings produce the source's confident predictions. A
shallower target never computes that stream. Keeping the gain then makes the new model confidently wrong: SmolLM2
(30 layers) cut to 6 layers starts with logits of standard deviation 4.4-4.8 and a held-out loss of 13.7 (first 6
layers) to 19.4 (DCT over depth), against 10.9 for random init, and spends its first ~40 training steps unlearning
that confidence. With the gain at its init (ones) the same weights start at 9.95 and end 80 steps at 6.30 instead
of 6.51 (random init: 6.93); see docs/results.md.

An adapter lists such genes in ``depth_calibrated_genes``; they are transferred when the target is at least as deep
as the source (growing or same-depth resizes keep them: at the source size zoo reproduces the source exactly), and
when the resize strategy keeps the source's last block in a shallower target (``keeps_last_layer``: the ordered
strategy does), since their input is then that block's output again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .genes import DEPTH


def source_depth(records: Mapping[str, Any]) -> int | None:
    """The source's layer count: the leading size of any gene stacked over depth (None: nothing is stacked)."""
    for record in records.values():
        if record.axes and record.axes[0] == DEPTH:
            return int(record.source_shape[0])
    return None


def depth_calibrated(adapter: Any, records: Mapping[str, Any], sizes: Mapping[str, int]) -> list[str]:
    """Names of ``records`` that the target should not take because it is shallower than the source."""
    names: Iterable[str] = getattr(adapter, "depth_calibrated_genes", ())
    depth = source_depth(records)
    if not names or depth is None or DEPTH not in sizes or int(sizes[DEPTH]) >= depth:
        return []
    return sorted(n for n in names if n in records)


__all__ = ["depth_calibrated", "source_depth"]
