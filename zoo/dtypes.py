"""Torch dtypes by name, resolved when looked up: a module can list the dtypes it accepts without importing torch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class DtypeTable(Mapping[str, "torch.dtype"]):
    """``key -> torch dtype``, built from ``key -> name of the dtype in torch`` (``{"F32": "float32"}``). Keys,
    ``in`` and ``len`` need no torch; ``table[key]`` imports it."""

    def __init__(self, names: Mapping[str, str]):
        self._names = dict(names)

    def __getitem__(self, key: str) -> torch.dtype:
        import torch

        return getattr(torch, self._names[key])

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def key_of(self, dtype: torch.dtype) -> str:
        """The key of ``dtype`` (``KeyError`` if it has none)."""
        name = str(dtype).removeprefix("torch.")
        for key, value in self._names.items():
            if value == name:
                return key
        raise KeyError(dtype)


# what learngene coefficients are stored as (``--dtype`` of ``zoo learngene add``), and what materialized weights
# are written as
STORAGE_DTYPES = DtypeTable({"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"})
