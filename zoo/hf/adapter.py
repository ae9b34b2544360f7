"""The ``transformers`` adapter base: a model family described by data, turned into extraction and model building.

A :class:`WeightMap` per parameter (its key, with ``{i}`` for the layer index, and the roles of its axes) plus the
config keys that hold each size describe most families. :class:`TransformersAdapter` implements the adapter
protocol (:class:`zoo.adapters.ArchitectureAdapter`) from that description for any ``transformers`` model. A new
family is usually one small file that subclasses it and lists its weights (see ``zoo_plugins.architectures.bert``).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..adapters import SIZE_OPTIONS, check_sizes
from ..errors import InvalidConfigError
from ..genes import DEPTH, TABLE_ROLES, GeneGroup, Genome, genome_of, shape_for
from . import assemble

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WeightMap:
    """Where one gene lives in a checkpoint.

    ``key`` contains ``{i}`` for per-layer weights (stacked into a leading ``depth`` axis). ``axes`` are the roles of
    the canonical per-layer tensor; the stored tensor is reshaped to them. ``transposed`` marks GPT-2's Conv1D
    ``[in, out]`` layout. ``part=(index, count)`` takes one of ``count`` equal slices of the output axis (fused qkv).
    ``fan_in`` counts the trailing axes that are inputs; by default 1 for ``*.weight`` maps with two or more axes
    (a Linear ``[out, in]``) unless the first axis is a lookup table (vocab, positions), else 0. ``absent``: how
    the target's parameter starts when the learngene has no such gene but transfers others (a head the source
    lacks): one of :data:`zoo.hf.assemble.ABSENT_INITS` (``identity``: a square matrix passes its input through;
    ``zeros``), or None for the family's random init (:func:`zoo.hf.assemble.init_fresh`).
    """

    gene: str
    key: str
    axes: tuple[str, ...]
    transposed: bool = False
    part: tuple[int, int] = (0, 1)
    optional: bool = False
    fan_in: int | None = None
    absent: str | None = None

    def __post_init__(self) -> None:
        if self.absent is not None and self.absent not in assemble.ABSENT_INITS:
            raise InvalidConfigError(f"weight map '{self.gene}': unknown absent init '{self.absent}'; valid: "
                                     f"{', '.join(assemble.ABSENT_INITS)} (or None: the family's random init)")

    @property
    def inputs(self) -> int:
        if self.fan_in is not None:
            return self.fan_in
        is_linear = self.key.endswith("weight") and len(self.axes) >= 2 and self.axes[0] not in TABLE_ROLES
        return 1 if is_linear else 0

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.key


@dataclass(frozen=True)
class ClassLayout:
    """A declaration that a family's default architecture holds exactly its weight maps, in their order, and
    nothing else: keys under ``prefix``, ``tied`` names (alias -> the state-dict key it shares, as transformers'
    ``_tied_weights_keys`` lists them) when the config ties embeddings, and whether the class generates text
    (its folder then has a generation config). :func:`zoo.hf.assemble.declared_layout` builds the layout from it, so
    a folder is written without importing the model class; tests/test_streaming.py checks it against the class."""

    prefix: str = ""
    tied: Mapping[str, str] = field(default_factory=dict)
    generates: bool = False


class _Held:
    """A gene tensor passed to a family's own ``from_genome`` (which reads ``.tensor``)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _whole_genes(genes: Iterable[tuple[str, int | None, torch.Tensor]]) -> dict[str, _Held]:
    """Stream items (whole genes or single layers) collected into whole genes."""
    import torch

    layers: dict[str, dict[int, torch.Tensor]] = defaultdict(dict)
    whole: dict[str, _Held] = {}
    for name, layer, tensor in genes:
        if layer is None:
            whole[name] = _Held(tensor)
        else:
            layers[name][layer] = tensor
    for name, parts in layers.items():
        whole[name] = _Held(torch.stack([parts[i] for i in range(len(parts))]))
    return whole


def _as_rows(tensor: torch.Tensor, transposed: bool) -> torch.Tensor:
    return tensor.T if transposed and tensor.dim() == 2 else tensor


def heads_hint(hidden: int, heads: int, head_dim: int, valid: str) -> str:
    """The error for a width that neither the source's head size nor its head count divides."""
    return (f"--hidden {hidden} does not fit the source's attention heads: its head size {head_dim} does not divide "
            f"{hidden} and neither do its {heads} heads; pass --heads, one of: {valid}")



class TransformersAdapter:
    """Adapter for a ``transformers`` family described by :class:`WeightMap` s and config keys."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    arch_aliases: ClassVar[tuple[str, ...]] = ()
    model_types: ClassVar[tuple[str, ...]] = ()
    source_aliases: ClassVar[Mapping[str, str]] = {}
    # role -> config key holding its size
    config_keys: ClassVar[Mapping[str, str]] = {}
    # prefixes a checkpoint may put before the base model's keys ("bert.", "transformer.")
    key_prefixes: ClassVar[tuple[str, ...]] = ()
    weights: ClassVar[tuple[WeightMap, ...]] = ()
    default_architecture: ClassVar[str] = ""
    size_options: ClassVar[tuple[str, ...]] = ("layers", "hidden", "heads", "ffn")
    # Declared capabilities: zoo relies on the generic methods below when these are set. A family that overrides
    # ``to_genome`` sets ``lazy_read = False``; one that overrides ``build``, ``from_genome`` or ``save`` sets
    # ``streamable = False``.
    lazy_read: ClassVar[bool] = True  # extraction reads the checkpoint through gene_groups, a tensor at a time
    streamable: ClassVar[bool] = True  # models are built gene by gene (build_from), to disk straight into files
    # the default architecture's state dict, declared (see ClassLayout); None: read off the class
    class_layout: ClassVar[ClassLayout | None] = None
    target_options: ClassVar[dict[str, str]] = {
        "architecture": "the transformers class written, e.g. BertForMaskedLM or LlamaForSequenceClassification "
                        "[default: the source's]",
    }

    def apply_options(self, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """``--set architecture=CLASS``: the model class the folder is written for (a head the source lacks then
        starts as its weight maps say, or at the family's random init)."""
        out = dict(config)
        if "architecture" in options:
            out["architectures"] = [self._model_class_name(str(options["architecture"]), out)]
        return out

    def _model_class_name(self, name: str, config: Mapping[str, Any]) -> str:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = config.get("model_type")

        def fits(candidate: str) -> bool:
            try:
                cls = getattr(transformers, candidate, None) if candidate.isidentifier() else None
            except Exception:  # a class whose optional backend is missing
                return False
            return getattr(getattr(cls, "config_class", None), "model_type", None) == model_type

        if not fits(name):
            stem = CONFIG_MAPPING_NAMES.get(str(model_type), "").removesuffix("Config")
            valid = sorted(n for n in dir(transformers) if stem and n.startswith(stem) and not n.endswith(
                "PreTrainedModel") and ("For" in n or n.endswith("Model")) and fits(n))
            raise InvalidConfigError(f"--set architecture={name}: not a transformers model class for "
                                     f"{model_type}; valid: {', '.join(valid) or '(none found)'}")
        return name

    # -- sizes and configs -------------------------------------------------------------------------------------
    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        sizes = {role: int(config[key]) for role, key in self.config_keys.items() if config.get(key) is not None}
        if "hidden" in sizes and "heads" in sizes and "head_dim" not in sizes:
            sizes["head_dim"] = sizes["hidden"] // sizes["heads"]
        return sizes

    def check_requested(self, requested: Mapping[str, int | None]) -> None:
        """Reject size options this family cannot set and values that are not positive whole numbers."""
        unsupported = sorted(k for k, v in requested.items() if v is not None and k not in self.size_options)
        if unsupported:
            raise InvalidConfigError(
                f"architecture '{self.name}' cannot set {', '.join('--' + u.replace('_', '-') for u in unsupported)}; "
                f"it supports {', '.join('--' + o.replace('_', '-') for o in self.size_options)}"
            )
        check_sizes(requested)

    def target_config(self, config: Mapping[str, Any], **requested: int | None) -> dict[str, Any]:
        """The source config with the requested sizes; unset sizes keep the source's.

        When the width changes, unset sizes that scale with it follow: the head size is kept (if it divides the
        width), as HyperCloning and most families do, and the feed-forward width keeps its ratio to the width.
        """
        self.check_requested(requested)
        source = self.sizes(config)
        target = dict(source)
        for option, value in requested.items():
            if value is not None:
                target[SIZE_OPTIONS[option]] = value
        hidden_changed = requested.get("hidden") is not None
        if hidden_changed and requested.get("heads") is None:
            if target["hidden"] % source["head_dim"] == 0:
                target["heads"] = target["hidden"] // source["head_dim"]
        if hidden_changed and requested.get("ffn") is None and "ffn" in source:
            # keep the model's aspect ratio (ffn = 4 x hidden in most families)
            target["ffn"] = max(1, round(source["ffn"] * target["hidden"] / source["hidden"]))
        if target["hidden"] % target["heads"] != 0:
            valid = [h for h in range(1, min(target["hidden"], 128) + 1) if target["hidden"] % h == 0]
            if requested.get("heads") is None:  # the head count is the source's: say so, not "--heads N"
                raise InvalidConfigError(heads_hint(target["hidden"], source["heads"], source["head_dim"],
                                                    ", ".join(map(str, valid))))
            raise InvalidConfigError(
                f"--heads {target['heads']} does not divide --hidden {target['hidden']}; "
                f"head counts that divide it: {', '.join(map(str, valid))}"
            )
        target["head_dim"] = target["hidden"] // target["heads"]
        out = copy.deepcopy(dict(config))
        for role, key in self.config_keys.items():
            if role in target:
                out[key] = target[role]
        return self.finish_config(out, target)

    def finish_config(self, config: dict[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
        """Hook for families with derived config keys."""
        return config

    def parameter_count(self, config: Mapping[str, Any]) -> int:
        sizes = self.sizes(config)
        total = 0
        for wm in self.weights:
            n = 1
            for d in shape_for(wm.axes, sizes):
                n *= d
            total += n * (sizes[DEPTH] if wm.per_layer else 1)
        return total

    # -- checkpoint <-> genes ----------------------------------------------------------------------------------
    def _read(self, wm: WeightMap, tensor: torch.Tensor, sizes: Mapping[str, int]) -> torch.Tensor:
        rows = _as_rows(tensor, wm.transposed)
        index, count = wm.part
        if count > 1:
            rows = rows.chunk(count, dim=0)[index]
        return rows.reshape(shape_for(wm.axes, sizes))

    def gene_maps(self, config: Mapping[str, Any]) -> tuple[WeightMap, ...]:
        """The weight maps that hold genes for this config (a family drops e.g. an output layer tied to the input)."""
        return self.weights

    def _keys(self, state: Mapping[str, Any]) -> dict[str, str]:
        """Canonical key (prefix stripped) -> the checkpoint's key, without reading any tensor."""
        out: dict[str, str] = {}
        for key in state:
            short = key
            for prefix in self.key_prefixes:
                if key.startswith(prefix):
                    short = key[len(prefix) :]
                    break
            out[short] = key
        return out

    def gene_groups(self, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Iterator[GeneGroup]:
        """The genes of a checkpoint, read lazily: each checkpoint tensor is read once, when its group is extracted.

        ``state`` may be a lazy mapping (:class:`zoo.hf.safetensors_io.SafetensorsReader`); maps that share a key
        (fused q, k, v) form one group so the fused tensor is read once per layer.
        """
        keys = self._keys(state)
        sizes = self.sizes(config)
        depth = sizes[DEPTH]
        by_key: dict[str, list[WeightMap]] = defaultdict(list)
        for wm in self.gene_maps(config):
            by_key[wm.key].append(wm)
        for template, maps in by_key.items():
            per_layer = maps[0].per_layer
            names = [template.format(i=i) for i in range(depth)] if per_layer else [template]
            missing = [k for k in names if k not in keys]
            if missing:
                if all(wm.optional for wm in maps):
                    continue
                raise InvalidConfigError(f"checkpoint has no '{missing[0]}' (needed for gene '{maps[0].gene}' of "
                                         f"architecture '{self.name}')")

            def layers(maps=maps, names=names) -> Iterator[Any]:
                for name in names:
                    def read(name=name) -> dict[str, torch.Tensor]:
                        tensor = state[keys[name]]
                        return {wm.gene: self._read(wm, tensor, sizes) for wm in maps}
                    yield read

            genes = [(wm.gene, (DEPTH, *wm.axes) if per_layer else wm.axes, wm.inputs) for wm in maps]
            yield GeneGroup(genes, depth if per_layer else None, layers)

    def to_genome(self, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Genome:
        return genome_of(self.gene_groups(state_dict, config))

    def from_genome(self, genome: Genome, config: Mapping[str, Any], template: Mapping[str, torch.Tensor]) -> dict:
        """State-dict entries (keys as in ``template``) for every gene; fused parts are concatenated."""
        import torch

        placements = assemble.plan(self, config, template, genome)
        dtypes = {place.key: genome[name].tensor.dtype for name, places in placements.items() for place in places}
        out = {key: torch.empty(template[key].shape, dtype=dtype) for key, dtype in dtypes.items()}
        assemble.fill(out, placements, ((name, None, gene.tensor) for name, gene in genome.items()))
        return out

    def template_key(self, key: str, template: Mapping[str, Any]) -> str:
        """The key of ``template`` (a model's state dict) that holds checkpoint key ``key`` (prefixes restored)."""
        if key in template:
            return key
        for prefix in self.key_prefixes:
            if prefix + key in template:
                return prefix + key
        raise KeyError(f"model has no parameter for '{key}'")

    # -- building models ---------------------------------------------------------------------------------------
    def model_class(self, config: Mapping[str, Any]) -> type:
        import transformers

        names = list(config.get("architectures") or []) + [self.default_architecture]
        for name in names:
            cls = getattr(transformers, name, None)
            if cls is not None:
                return cls
        raise InvalidConfigError(f"transformers has none of the classes {names}")

    def hf_config(self, config: Mapping[str, Any]) -> Any:
        from transformers import AutoConfig

        cfg = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
        return AutoConfig.for_model(config["model_type"], **cfg)

    def build(self, config: Mapping[str, Any], genome: Genome, device: Any = "cpu") -> torch.nn.Module:
        """A ``transformers`` model of ``config`` whose parameters are the genes.

        The model is constructed without its random init (transformers' no-init context: parameters are allocated
        but not filled; buffers such as ``position_ids`` are computed by the constructor as usual). Only the
        parameters no gene covers get the family's own init (:func:`zoo.hf.assemble.init_fresh`); they are listed in
        ``model.zoo_fresh_parameters``. Genes are then copied straight into the parameters (fused parts and
        transposed layouts written in place), so no full random init, state dict or ``load_state_dict`` copy is
        ever made. Tied weights stay tied.
        """
        return self.build_from(config, list(genome), ((name, None, gene.tensor) for name, gene in genome.items()),
                               device)

    def build_from(self, config: Mapping[str, Any], names: list[str],
                   genes: Iterable[tuple[str, int | None, torch.Tensor]], device: Any = "cpu") -> torch.nn.Module:
        """:meth:`build` from genes, or single layers of genes, that arrive one at a time (``(name, layer,
        tensor)`` as :func:`zoo.materialization.materialize_stream` yields them; each is copied in, then may be dropped)."""
        import torch

        model = assemble.construct(self, config, device)
        params = model.state_dict(keep_vars=True)
        if not self.streamable:
            # a family that is not streamable may have its own layout logic (from_genome): it needs every gene at once
            values = self.from_genome(_whole_genes(genes), config,  # type: ignore[arg-type]  # _Held: a Gene's fields
                                      {k: v.detach() for k, v in params.items()})
            for key, value in values.items():
                if params[key].shape != value.shape:
                    raise InvalidConfigError(f"gene for '{key}' has shape {tuple(value.shape)}, model wants "
                                             f"{tuple(params[key].shape)}")
            starts = assemble.absent_starts(self, config, model, set(values))
            fresh = assemble.init_fresh(model, set(values), starts)
            with torch.no_grad():
                for key, value in values.items():
                    params[key].copy_(value)
        else:
            placements = assemble.plan(self, config, params, names)
            covered = {p.key for places in placements.values() for p in places}
            starts = assemble.absent_starts(self, config, model, covered)
            fresh = assemble.init_fresh(model, covered, starts)
            assemble.fill(params, placements, genes)
        model.tie_weights()
        model.eval()
        model.zoo_fresh_parameters = fresh
        model.zoo_absent_starts = starts
        return model

    def save(self, model: torch.nn.Module, out_dir: Any) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
