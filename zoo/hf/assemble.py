"""Put genes into a ``transformers`` model's parameters, in memory or straight into safetensors files.

One placement plan serves both: for every gene, the parameters (and row ranges of them) its layers fill. Genes
arrive one at a time and are dropped once placed, so building in memory holds the model plus one gene, and writing
to disk holds one gene group (fused q, k, v) plus the rows being assembled, never the whole target.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidConfigError
from ..genes import DEPTH, shape_for
from .safetensors_io import SafetensorsWriter

if TYPE_CHECKING:
    import torch

# How a parameter may start when the learngene has no gene for it (WeightMap.absent; _start applies them).
# ``per_copy``: a norm's gain in front of a reader tied to a table whose hidden columns were copied (a grown BERT's
# masked-LM head: the decoder is the word embeddings, whose copies the stream needs whole): ones, divided by each
# channel's number of copies (:func:`divide_by_copies`), so the reader sums each source channel once; transferred,
# such a gene is divided by the same counts (zoo.app.build.per_copy_genes).
ABSENT_INITS = ("identity", "zeros", "per_copy")
DEFAULT_SHARD_BYTES = 5 * 2**30  # transformers' long-time default max_shard_size ("5GB")


@dataclass(frozen=True)
class Placement:
    """Rows ``start:start + rows`` of parameter ``key`` (of its transpose, for Conv1D) hold layer ``layer``
    (``None``: the whole gene) of one gene."""

    key: str
    layer: int | None
    start: int
    rows: int
    transposed: bool


def _no_init() -> Any:
    try:  # transformers >= 5
        from transformers.initialization import no_init_weights
    except ImportError:
        try:  # transformers 4.x
            from transformers.modeling_utils import no_init_weights
        except ImportError:  # pragma: no cover - very old transformers: plain (slower) construction
            return contextlib.nullcontext()
    return no_init_weights()


@dataclass
class Layout:
    """What writing a model's folder needs from its class: the state dict's tensors in the class's order (tied names
    share one tensor; on ``meta`` until made real), the names of its parameters (each once, as
    ``named_parameters`` gives them), the config it is saved with, the class's name, its generation config (None
    when it does not generate), and the model itself when one was constructed (:func:`layout`)."""

    params: dict[str, torch.Tensor]
    parameters: list[str]
    config: Any
    class_name: str
    generation_config: Any = None
    model: torch.nn.Module | None = None

    @classmethod
    def of(cls, model: torch.nn.Module) -> Layout:
        generation = getattr(model, "generation_config", None)
        generates = generation is not None and model.can_generate()  # type: ignore[operator]
        return cls(model.state_dict(keep_vars=True), [name for name, _ in model.named_parameters()],
                   getattr(model, "config", None), type(model).__name__, generation if generates else None, model)

    @property
    def parameter_count(self) -> int:
        return sum(self.params[name].numel() for name in self.parameters)


def layout(adapter: Any, config: Mapping[str, Any], genes: Iterable[str]) -> Layout:
    """The target's layout, for writing it gene by gene: the one the adapter declares (its ``class_layout``) when
    that is all of it and ``genes`` fill every parameter, so the model class is never imported; else the
    class's own, constructed on ``meta``."""
    return declared_layout(adapter, config, genes) or Layout.of(construct(adapter, config, "meta"))


def declared_layout(adapter: Any, config: Mapping[str, Any], genes: Iterable[str]) -> Layout | None:
    """The layout an adapter's ``class_layout`` declares for its default architecture: the weight maps' keys in
    their order (per-layer ones once per layer, between the maps listed before and after them) under the declared
    prefix, each a ``[outputs, inputs]`` matrix (transposed for Conv1D) or a vector, plus the tied names. None when
    it does not apply: no declaration, another class named by the config, untied embeddings, or a weight map
    without a gene in ``genes`` (a parameter to initialize, which needs the class)."""
    spec = getattr(adapter, "class_layout", None)
    named = config.get("architectures") or [adapter.default_architecture]  # the class model_class would pick
    if spec is None or named[0] != adapter.default_architecture:
        return None
    present = set(genes)
    if any(wm.gene not in present for wm in adapter.weights):
        return None
    hf_config = adapter.hf_config(config)
    if spec.tied and not getattr(hf_config, "tie_word_embeddings", True):
        return None
    import torch

    sizes = adapter.sizes(config)
    rows: dict[str, list[int]] = {}  # key template -> [output rows, inputs...] in row form, summed over fused parts
    transposed: dict[str, bool] = {}
    before: list[str] = []
    per_layer: list[str] = []
    after: list[str] = []
    for wm in adapter.weights:
        shape = shape_for(wm.axes, sizes)
        # a weight with two or more axes is a matrix (Linear, Conv1D, Embedding); biases and norms are vectors
        inputs = max(wm.inputs, 1) if wm.key.endswith("weight") and len(shape) >= 2 else 0
        cut = len(shape) - inputs
        part = [math.prod(shape[:cut]), math.prod(shape[cut:])] if inputs else [math.prod(shape)]
        if wm.key in rows:  # another part of a fused parameter: more output rows
            rows[wm.key][0] += part[0]
            continue
        rows[wm.key], transposed[wm.key] = part, wm.transposed and len(part) == 2
        (per_layer if wm.per_layer else after if per_layer else before).append(wm.key)
    keys = [*((k, k) for k in before), *((k.format(i=i), k) for i in range(sizes[DEPTH]) for k in per_layer),
            *((k, k) for k in after)]
    params: dict[str, torch.Tensor] = {}
    for key, template in keys:
        params[spec.prefix + key] = torch.empty(rows[template][::-1] if transposed[template] else rows[template],
                                                device="meta")
    names = list(params)
    for alias, source in spec.tied.items():
        params[alias] = params[source]
    generation = None
    if spec.generates:
        from transformers import GenerationConfig

        generation = GenerationConfig.from_model_config(hf_config)
    return Layout(params, names, hf_config, adapter.default_architecture, generation)


def construct(adapter: Any, config: Mapping[str, Any], device: Any) -> torch.nn.Module:
    """The family's model for ``config`` with parameters allocated but not initialized (on ``meta``: not even
    allocated, which is all a layout needs)."""
    import torch

    cls = adapter.model_class(config)
    with torch.device(device), _no_init():
        model = cls(adapter.hf_config(config))
    model.tie_weights()  # transformers 5 ties inside the init that no_init_weights skips
    return model


def plan(adapter: Any, config: Mapping[str, Any], params: Mapping[str, torch.Tensor],
         genes: Iterable[str]) -> dict[str, list[Placement]]:
    """Where each of ``genes`` goes among ``params`` (the model's state dict, possibly on ``meta``). A gene of an
    optional weight map whose parameter the model class lacks goes nowhere (it is not in the result)."""
    sizes = adapter.sizes(config)
    present = set(genes)
    pieces: dict[str, list[tuple[int, str, int | None, Any]]] = defaultdict(list)
    for wm in adapter.weights:
        if wm.gene not in present:
            continue
        for i in range(sizes[DEPTH]) if wm.per_layer else [None]:
            pieces[wm.key.format(i=i)].append((wm.part[0], wm.gene, i, wm))
    out: dict[str, list[Placement]] = defaultdict(list)
    for key, parts in pieces.items():
        try:
            full_key = adapter.template_key(key, params)
        except KeyError:
            if all(p[3].optional for p in parts):  # a part the chosen class lacks (a pooler under BertForMaskedLM)
                continue
            raise
        target = params[full_key]
        parts.sort(key=lambda p: p[0])
        transposed = parts[0][3].transposed and target.dim() == 2
        dest_shape = tuple(target.shape[::-1]) if transposed else tuple(target.shape)
        shapes = [shape_for(p[3].axes, sizes) for p in parts]
        if target.dim() == 0:
            if len(parts) != 1 or math.prod(shapes[0]) != 1:
                raise _mismatch(full_key, shapes, ())
            out[parts[0][1]].append(Placement(full_key, parts[0][2], 0, 1, False))
            continue
        row = math.prod(dest_shape[1:])
        if sum(math.prod(s) for s in shapes) != math.prod(dest_shape) or any(math.prod(s) % row for s in shapes):
            raise _mismatch(full_key, shapes, dest_shape, tuple(target.shape))
        start = 0
        for (_, gene, layer, _), shape in zip(parts, shapes):
            rows = math.prod(shape) // row
            out[gene].append(Placement(full_key, layer, start, rows, transposed))
            start += rows
    return dict(out)


def sharing(placements: Mapping[str, list[Placement]]) -> list[list[str]]:
    """Groups of genes that fill the same parameter (fused q, k, v), so they can be produced together."""
    owner: dict[str, str] = {}
    parent: dict[str, str] = {name: name for name in placements}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for name, places in placements.items():
        for place in places:
            other = owner.setdefault(place.key, name)
            parent[root(name)] = root(other)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in placements:
        groups[root(name)].append(name)
    return [group for group in groups.values() if len(group) > 1]


def _mismatch(key: str, shapes: list[tuple[int, ...]], want: tuple[int, ...],
              stored: tuple[int, ...] | None = None) -> InvalidConfigError:
    note = "" if stored is None or stored == want else f" (stored transposed as {stored})"
    return InvalidConfigError(f"gene for '{key}' has shape {' + '.join(map(str, shapes))}, model wants {want}{note}")


def _by_layer(placements: Mapping[str, list[Placement]]) -> dict[tuple[str, int | None], list[Placement]]:
    out: dict[tuple[str, int | None], list[Placement]] = defaultdict(list)
    for name, places in placements.items():
        for place in places:
            out[name, place.layer].append(place)
    return out


def _places(index: Mapping[tuple[str, int | None], list[Placement]], placements: Mapping[str, list[Placement]],
            name: str, layer: int | None) -> list[Placement]:
    """Where a stream item goes: one layer of a gene, or (``layer`` None) every place of the whole gene."""
    return list(placements.get(name, ())) if layer is None else index.get((name, layer), [])


def _piece(tensor: torch.Tensor, place: Placement, row_shape: tuple[int, ...], whole: bool = True) -> torch.Tensor:
    part = tensor[place.layer] if whole and place.layer is not None else tensor
    return part.reshape(place.rows, *row_shape) if row_shape or place.rows != 1 else part.reshape(())


def _rows_view(dest: torch.Tensor, place: Placement) -> torch.Tensor:
    if dest.dim() == 0:
        return dest
    view = dest.T if place.transposed else dest
    return view.narrow(0, place.start, place.rows)


def uncovered(model: torch.nn.Module | Layout, covered: set[str]) -> list[str]:
    """The parameters of ``model`` (possibly on ``meta``, or its layout) that none of the ``covered`` state-dict
    keys fill (a tied parameter is covered through any of its names)."""
    if isinstance(model, Layout):
        params, names = model.params, model.parameters
    else:
        params, names = model.state_dict(keep_vars=True), [name for name, _ in model.named_parameters()]
    covered_ids = {id(params[key]) for key in covered}
    return [name for name in names if id(params[name]) not in covered_ids]


def absent_starts(adapter: Any, config: Mapping[str, Any], model: torch.nn.Module | Layout,
                  covered: set[str]) -> dict[str, str]:
    """The parameters no gene covers (:func:`uncovered`) whose weight map says how they start
    (``WeightMap.absent``), by name. Only when some gene is covered: a model built from no learngene at all is the
    family's random init."""
    if not covered:
        return {}
    params = model.params if isinstance(model, Layout) else model.state_dict(keep_vars=True)
    fresh = set(uncovered(model, covered))
    depth = adapter.sizes(config).get(DEPTH, 1)
    out: dict[str, str] = {}
    for wm in getattr(adapter, "weights", ()):
        if getattr(wm, "absent", None) is None:
            continue
        for i in range(depth) if wm.per_layer else [None]:
            try:
                key = adapter.template_key(wm.key.format(i=i), params)
            except KeyError:  # an optional map the target class has no parameter for
                continue
            if key in fresh:
                out[key] = wm.absent
    return out


def _start(name: str, param: torch.Tensor, rule: str) -> None:
    import torch

    with torch.no_grad():
        if rule == "zeros":
            param.zero_()
        elif rule == "per_copy":
            param.fill_(1.0)  # divide_by_copies then divides it where the strategy copied channels
        elif rule == "identity":
            if param.dim() != 2 or param.shape[0] != param.shape[1]:
                raise InvalidConfigError(f"'{name}' has shape {tuple(param.shape)}; an identity start needs a "
                                         f"square matrix (fix the weight map's absent init)")
            param.copy_(torch.eye(param.shape[0], dtype=param.dtype, device=param.device))
        else:
            raise InvalidConfigError(f"unknown absent init '{rule}' for '{name}'; valid: {', '.join(ABSENT_INITS)}")


def divide_by_copies(params: Mapping[str, torch.Tensor], starts: Mapping[str, str],
                     copies: torch.Tensor | None) -> None:
    """Divide the ``per_copy`` fresh parameters (see :data:`ABSENT_INITS`) by ``copies``, each hidden channel's
    number of copies (the resize strategy's ``replicas``; None: no channel was copied)."""
    import torch

    if copies is None:
        return
    with torch.no_grad():
        for name, rule in starts.items():
            param = params.get(name)
            if rule == "per_copy" and param is not None and param.shape == copies.shape:
                param.div_(copies.to(param))


def _materialize_own(model: torch.nn.Module, module: torch.nn.Module) -> None:
    """Give ``module``'s own meta parameters memory, and every other module that shares one of them (a tied
    bias: BERT's ``cls.predictions.bias`` is its decoder's) the same new parameter, so ties survive."""
    before = dict(module.named_parameters(recurse=False))
    module.to_empty(device="cpu", recurse=False)
    after = dict(module.named_parameters(recurse=False))
    renamed = {id(before[k]): after[k] for k in before if after[k] is not before[k]}
    for other in model.modules():
        for attr, p in list(other.named_parameters(recurse=False)):
            if id(p) in renamed and other is not module:
                setattr(other, attr, renamed[id(p)])


def init_fresh(model: torch.nn.Module | Layout, covered: set[str], starts: Mapping[str, str] | None = None
               ) -> list[str]:
    """Give the parameters no gene covers the family's own init, and nothing else; returns their names. ``model``
    may be a layout: a declared one has none (:func:`declared_layout`), else its model's are initialized.

    ``reset_parameters`` (torch's default) then ``_init_weights`` of the nearest ``PreTrainedModel``, on the
    modules holding fresh parameters and their ancestors (GPT-2's scaled ``c_proj`` init lives in the parent's
    rule), children before parents, as ``transformers`` does. Rules that also touch covered parameters are
    harmless: genes are written afterwards. Sorted, so the order never depends on ``PYTHONHASHSEED``. Then the
    fresh parameters named in ``starts`` (:func:`absent_starts`) start as it says instead.
    """
    fresh = uncovered(model, covered)
    if not fresh:
        return []
    if isinstance(model, Layout):
        if model.model is None:  # declared_layout applies only where the genes fill every parameter
            raise InvalidConfigError(f"'{fresh[0]}' has no gene and no model class to initialize it")
        model = model.model
    from transformers import PreTrainedModel

    modules = dict(model.named_modules())
    owners = sorted({name.rpartition(".")[0] for name in fresh})
    for name in owners:
        if any(p.is_meta for p in modules[name].parameters(recurse=False)):
            _materialize_own(model, modules[name])  # streaming to disk: only these get memory
        reset = getattr(modules[name], "reset_parameters", None)
        if callable(reset) and not isinstance(modules[name], PreTrainedModel):
            reset()
    chain = {".".join(name.split(".")[:j]) if name else "" for name in owners
             for j in range(len(name.split(".")) + 1 if name else 1)}

    def init_fn(name: str) -> Any:
        parts = name.split(".") if name else []
        for j in range(len(parts), -1, -1):  # the nearest PreTrainedModel owns the init rules
            owner = modules.get(".".join(parts[:j]))
            if isinstance(owner, PreTrainedModel):
                return owner._init_weights
        return None

    for name in sorted(chain, key=lambda n: (-(n.count(".") + 1 if n else 0), n)):
        fn = init_fn(name)
        if fn is not None:
            fn(modules[name])
    named = dict(model.named_parameters())
    for name in sorted(set(fresh) & set(starts or {})):
        _start(name, named[name], (starts or {})[name])
    return sorted(fresh)


def fill(params: Mapping[str, torch.Tensor], placements: Mapping[str, list[Placement]],
         genes: Iterable[tuple[str, int | None, torch.Tensor]]) -> None:
    """Copy each gene (or gene layer: see :func:`zoo.materialization.materialize_stream`) into ``params`` (a model's
    ``state_dict(keep_vars=True)``, or any tensors keyed like it) as it arrives."""
    import torch

    index = _by_layer(placements)
    with torch.no_grad():
        for name, layer, tensor in genes:
            for place in _places(index, placements, name, layer):
                view = _rows_view(params[place.key], place)
                view.copy_(_piece(tensor, place, tuple(view.shape[1:]), whole=layer is None))


def saved_names(params: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Every state-dict key -> the key its tensor is saved under: the first name of each tied group, as
    ``save_pretrained`` keeps (the tie's source, e.g. ``wte`` rather than ``lm_head``)."""
    first: dict[int, str] = {}
    return {key: first.setdefault(id(value), key) for key, value in params.items()}


def write_pretrained(model: torch.nn.Module | Layout, placements: Mapping[str, list[Placement]],
                     genes: Iterable[tuple[str, int | None, torch.Tensor]], out_dir: Path,
                     dtype: torch.dtype | None = None,
                     shard_bytes: int = DEFAULT_SHARD_BYTES,
                     progress: Callable[[str], None] | None = None) -> list[str]:
    """Write ``model`` (a model, or its :class:`Layout`, on ``meta`` but for its fresh parameters) as a
    ``from_pretrained`` folder, taking genes as they arrive. Returns the files written. Sharded like
    ``save_pretrained`` above ``shard_bytes``. ``dtype``: of the floating-point weights written (None: float32)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype

    described = model if isinstance(model, Layout) else Layout.of(model)
    # the model's tensors as they are now: its fresh parameters may have been made real since its layout was read
    params = described.model.state_dict(keep_vars=True) if described.model is not None else described.params
    canonical = saved_names(params)  # a tied duplicate is written under its saved name
    keys = list(dict.fromkeys(canonical.values()))
    item = torch.empty((), dtype=dtype).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for key in keys:
        nbytes = params[key].numel() * item
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    stored = {key: dtype if params[key].is_floating_point() else params[key].dtype for key in keys}
    writers = {}
    file_of = {}
    try:
        for name, shard in zip(names, shards):
            entries = {key: (stored[key], tuple(params[key].shape)) for key in shard}
            writers[name] = SafetensorsWriter(out_dir / name, entries, {"format": "pt"})
            file_of.update(dict.fromkeys(shard, name))
        # a parameter whose pieces come from several genes is assembled in a buffer, written once complete
        remaining: dict[str, int] = defaultdict(int)
        for places in placements.values():
            for place in places:
                remaining[canonical[place.key]] += 1
        buffers: dict[str, torch.Tensor] = {}
        index = _by_layer(placements)
        for name, layer, tensor in genes:
            for place in _places(index, placements, name, layer):
                key = canonical[place.key]
                piece = _piece(tensor, place, tuple(_rows_view(params[key], place).shape[1:]), whole=layer is None)
                if remaining[key] == 1 and key not in buffers and not place.transposed and place.start == 0:
                    writers[file_of[key]].write(key, piece)  # the whole parameter in one piece: no buffer
                    remaining[key] = 0
                    continue
                if key not in buffers:
                    buffers[key] = torch.empty(params[key].shape, dtype=stored[key])
                _rows_view(buffers[key], place).copy_(piece)
                remaining[key] -= 1
                if remaining[key] == 0:
                    writers[file_of[key]].write(key, buffers.pop(key))
            if progress is not None:
                progress(name)
        for key in keys:  # parameters no gene covers: their fresh init
            if key not in remaining:
                writers[file_of[key]].write(key, params[key].detach())
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    files = list(names)
    if len(names) > 1:
        shard_index = {"metadata": {"total_size": sum(params[k].numel() * item for k in keys)},
                       "weight_map": {key: file_of[key] for key in keys}}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(shard_index, indent=2) + "\n")
        files.append("model.safetensors.index.json")
    config = described.config
    config.architectures = [described.class_name]  # as save_pretrained records it
    if dtype != torch.float32:
        config.dtype = dtype
    config.save_pretrained(out_dir)
    files.append("config.json")
    if described.generation_config is not None:
        described.generation_config.save_pretrained(out_dir)
        files.append("generation_config.json")
    return files


def streamable(adapter: Any) -> bool:
    """Whether ``adapter`` declares that its models can be built gene by gene from its weight maps (its
    ``streamable`` capability: ``weights``, ``sizes``, ``model_class``, ``hf_config``, ``template_key`` and
    ``build_from``, as :class:`zoo.hf.TransformersAdapter` has them)."""
    return bool(getattr(adapter, "streamable", False))


__all__ = ["Layout", "Placement", "absent_starts", "construct", "declared_layout", "divide_by_copies", "fill",
           "init_fresh", "layout", "plan", "saved_names", "streamable", "uncovered", "write_pretrained"]
