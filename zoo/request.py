"""A materialization request: what to build from a learngene, as one value checked when it is made.

``zoo.materialize`` and ``zoo.materialize_to_disk`` make one from their keywords, the CLI from its options (and
from a ``zoo.json`` with ``--like``), the benchmarks one per task; everything below them reads the request instead
of a dozen loose arguments. ``zoo.json``'s ``rebuild`` record is the request as it was resolved (the learngene's
name and content hash, the strategy's and the device's names): :meth:`MaterializeRequest.record` writes it;
``MaterializeRequest(**record)``, ``materialize_to_disk(out, **record)`` and ``zoo materialize --like`` read it
back.

Checked here, without the registry: sizes, statistics rule, dtype, device name, seed, options, that a learngene or
a family is named. Checked where the learngene is known: the family's size options and target options
(:meth:`~MaterializeRequest.target_config`), which strategies can read it (:meth:`~MaterializeRequest.
resize_strategy`).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .adapters import check_sizes
from .dtypes import STORAGE_DTYPES
from .errors import InvalidConfigError
from .importance import Calibration
from .inputs import apply_options, check_device
from .materialization import STATS_RULES
from .plugin_host import catalog

if TYPE_CHECKING:
    from .registry import LearngeneInfo

DEFAULT_SEED = 0  # parameters no gene covers get the same init on every run unless asked otherwise
# the size keywords, in the order zoo.json's rebuild record and command list them
SIZES = ("layers", "hidden", "heads", "ffn", "kv_heads", "head_dim", "positions")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class MaterializeRequest:
    """What to materialize. Sizes left ``None`` keep the source's; ``learngene`` names one, else the newest of
    ``arch`` is used. ``options`` are the family's other target settings (``--set``); ``seed`` seeds the init of
    parameters no gene covers (``None``: not seeded); ``dtype`` is the saved weights' type; ``device`` is where the
    genes are built (``auto``: a GPU when there is one); ``learngene_sha256`` is the content hash the learngene
    must have (a rebuild passes it, so a learngene re-added under the same name is refused)."""

    arch: str | None = None
    _: KW_ONLY
    learngene: str | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    ffn: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    positions: int | None = None
    strategy: str | None = None
    stats: str = "restore"
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = DEFAULT_SEED
    dtype: str = "float32"
    device: str = "auto"
    learngene_sha256: str | None = None

    def __post_init__(self) -> None:
        for name in ("arch", "learngene", "strategy"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidConfigError(f"{name} must be a name, got {value!r}")
        if self.arch is None and self.learngene is None:
            raise InvalidConfigError(f"give --arch (one of {', '.join(sorted(catalog().architectures))}) or "
                                     f"--from NAME")
        check_sizes(self.sizes)
        if self.stats not in STATS_RULES:
            raise InvalidConfigError(f"unknown statistics rule '{self.stats}'; valid choices: {', '.join(STATS_RULES)}")
        if self.dtype not in STORAGE_DTYPES:
            raise InvalidConfigError(f"unknown dtype '{self.dtype}'; valid choices: {', '.join(STORAGE_DTYPES)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise InvalidConfigError(f"--seed must be a whole number (or None: not seeded), got {self.seed!r}")
        options = {} if self.options is None else self.options
        if not isinstance(options, Mapping) or not all(isinstance(key, str) for key in options):
            raise InvalidConfigError(f"options must map option names to values (--set KEY=VALUE), got {options!r}")
        if self.learngene_sha256 is not None and not (isinstance(self.learngene_sha256, str)
                                                      and SHA256.fullmatch(self.learngene_sha256)):
            raise InvalidConfigError(f"learngene_sha256 must be 64 hex digits (as zoo.json records it), got "
                                     f"{self.learngene_sha256!r}")
        # a value from here on: the caller's dict may change, the request does not; devices are kept by name
        object.__setattr__(self, "options", MappingProxyType(dict(options)))
        object.__setattr__(self, "device", check_device(self.device))

    @property
    def sizes(self) -> dict[str, int | None]:
        """The size keywords (``layers``, ``hidden``, ...), ``None`` where the source's size is kept."""
        return {name: getattr(self, name) for name in SIZES}

    def target_config(self, adapter: Any, source_config: Mapping[str, Any]) -> dict[str, Any]:
        """The target's config: the source's with this request's sizes, then its options (``--set``)."""
        config = adapter.target_config(source_config, **self.sizes)
        return apply_options(adapter, config, dict(self.options))

    def resize_strategy(self, transform: Any, info: LearngeneInfo) -> Any:
        """The strategy for ``info``: the named one (else the transform's default), bound to the learngene's
        calibration when it needs one; a transform may name the only strategies that can read it at keep < 1."""
        name = self.strategy or str(getattr(transform, "default_strategy", "spectral"))
        allowed = getattr(transform, "strategies", None)
        if allowed is not None and name not in allowed and any(ratio < 1.0 for ratio in info.keep.values()):
            raise InvalidConfigError(f"learngene '{info.name}' ({info.transform}) materializes only with --strategy "
                                     f"{' or '.join(allowed)}; for '{name}' add a dct learngene of the same source")
        strategy = catalog().resize_strategy(name)
        if getattr(strategy, "needs_calibration", False):
            calibration = Calibration.from_bytes(info.calibration) if info.calibration else None
            strategy = strategy.for_learngene(calibration)
        return strategy

    def record(self) -> dict[str, Any]:
        """``zoo.json``'s ``rebuild`` record of this request (sizes it leaves to the source are left out)."""
        return {"learngene": self.learngene, **{k: v for k, v in self.sizes.items() if v is not None},
                "strategy": self.strategy, "stats": self.stats, "options": dict(self.options), "seed": self.seed,
                "dtype": self.dtype, "device": self.device, "learngene_sha256": self.learngene_sha256}

    def command(self, out: str | Path | None = None) -> str:
        """The ``zoo materialize`` line that makes this request (where the registry is stays out of it: the
        folder it goes into may be published)."""
        words = ["zoo", "materialize", *(["--from", self.learngene] if self.learngene else ["--arch", str(self.arch)])]
        for key, value in self.sizes.items():
            if value is not None:
                words += [f"--{key.replace('_', '-')}", str(value)]
        if self.strategy is not None:
            words += ["--strategy", self.strategy]
        words += ["--stats", self.stats]
        for key, value in self.options.items():
            words += ["--set", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        if self.seed is not None:
            words += ["--seed", str(self.seed)]
        words += ["--dtype", self.dtype, "--device", self.device]
        if out is not None:
            words += ["--out", Path(out).name]
        return shlex.join(words)

