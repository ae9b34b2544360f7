"""The architecture adapter protocol: what zoo calls to turn a model family's checkpoint into canonical genes and
genes into models, and the size options every family is asked for.

This is the contract, not an implementation: the ``transformers`` base class that implements it from a family's
weight maps is :class:`zoo.hf.TransformersAdapter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import InvalidConfigError
from .genes import DEPTH, Genome

if TYPE_CHECKING:
    import torch

# CLI/API size options and the role each one sets.
SIZE_OPTIONS: dict[str, str] = {
    "layers": DEPTH,
    "hidden": "hidden",
    "heads": "heads",
    "kv_heads": "kv_heads",
    "head_dim": "head_dim",
    "ffn": "ffn",
    "positions": "positions",
}
# Refuse before allocating: a target with more parameters than this needs an explicit max_params.
DEFAULT_MAX_PARAMS = 20_000_000_000


@runtime_checkable
class ArchitectureAdapter(Protocol):
    """What zoo calls on an architecture adapter; :class:`zoo.hf.TransformersAdapter` implements all of it.

    Optional members, used when present: ``target_options`` (name -> help) with ``apply_options(config, options)
    -> config`` (``--set KEY=VALUE``), ``load_code(config, out_dir) -> str`` (how to load what ``save`` wrote,
    when it is not ``from_pretrained``), ``depth_calibrated_genes`` (:mod:`zoo.calibrate`) and ``depth_rule``
    (which source blocks a shallower target keeps, for a strategy that chooses: a rule of the ``ordered``
    strategy's ``depth``; calibration records it with the learngene).

    Declared capabilities (off when absent): ``lazy_read``: extraction calls ``gene_groups(state, config)``
    instead of ``to_genome``; ``streamable``: models are built by ``build_from`` and written to disk through the
    weight maps (``weights``, ``template_key``, ``model_class``, ``hf_config``) instead of by ``build`` and
    ``save``; ``class_layout`` (a :class:`zoo.hf.ClassLayout`): a streamed folder is written without importing
    the model class, when the genes fill every parameter.
    """

    name: str
    description: str
    arch_aliases: tuple[str, ...]
    model_types: tuple[str, ...]
    source_aliases: Mapping[str, str]
    size_options: tuple[str, ...]

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]: ...
    def target_config(self, config: Mapping[str, Any], **sizes: int | None) -> dict[str, Any]: ...
    def parameter_count(self, config: Mapping[str, Any]) -> int: ...
    def to_genome(self, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Genome: ...
    def build(self, config: Mapping[str, Any], genome: Genome, device: Any = "cpu") -> torch.nn.Module: ...
    def save(self, model: torch.nn.Module, out_dir: Any) -> None: ...


def check_sizes(requested: Mapping[str, int | None]) -> None:
    """Reject size options whose values are not positive whole numbers (``None``: keep the source's)."""
    for option, value in requested.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidConfigError(f"--{option.replace('_', '-')} must be a whole number, got {value!r}")
        if value < 1:
            raise InvalidConfigError(f"--{option.replace('_', '-')} must be at least 1, got {value}")
