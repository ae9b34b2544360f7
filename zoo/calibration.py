"""Calibration: how much each unit of a source model matters, measured once at ``learngene add``.

The source model is built exactly (from its own genes) and run on a little data with hooks on its linear layers,
norms and blocks. What is recorded (``zoo.importance`` stores it, ``zoo_plugins.transforms.ordered`` uses it):

* ``hidden`` [hidden]: residual-stream channels, one ranking for every layer (weight subcloning, Minitron): the
  mean square of each channel at the input of every linear layer that reads the residual stream (the outputs of
  the norms), each layer's share normalized so that no single layer decides.
* ``ffn`` [layers, ffn]: a feed-forward neuron's contribution to the block's output, ``E[a_j^2] * ||W_down[:, j]||^2``
  (Wanda / Minitron's activation-times-weight score).
* ``heads`` [layers, heads]: the same for an attention head, over its ``head_dim`` inputs of the output projection.
* ``depth`` [layers]: block influence, ``1 - cos(block input, block output)`` averaged over tokens (ShortGPT,
  Minitron's depth score).
* ``stream_distance`` [layers + 1, layers + 1]: the angular distance ``arccos(cos) / pi`` between the residual
  stream at the input of block ``i`` and at the input of block ``j`` (the last entry: the last block's output),
  averaged over tokens: how little a run of blocks changes the stream, so a shallower target can drop the run that
  changes it least (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers").
* ``energy:<gene>`` [layers, hidden] or [hidden]: each channel's share of the energy at the input of a norm, so
  that a norm's gain can be corrected when channels are dropped (``sqrt(rho * D / d)``).

Without data (``calibrate="none"``) the same scores are estimated from the weights alone (``weight_scores``).
Modules are matched to genes by their values (the model was built from the genes, so each weight is an exact copy
of one gene layer), so any adapter that can build its source model is covered, whatever its parameter names.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidConfigError
from .genes import DEPTH, Gene, Genome
from .importance import DEFAULT_SAMPLES, Calibration
from .sources import write_assets

TEXT_TOKENS = 128  # tokens per calibration sequence
IMAGE_SIZE = 224
HELD_OUT_EVERY = 5  # bench/_data.py holds out every 5th pydoc topic: calibration never reads those
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PER_LAYER_ROLES = ("ffn", "heads")
HEAD_AXES = (("heads", "head_dim"), ("kv_heads", "q_per_kv", "head_dim"))
CALIBRATE_CHOICES = "'default' (built-in prose or images), 'none' (weights only) or a folder/file of .txt/.md or images"


# -- data --------------------------------------------------------------------------------------------------------
def prose() -> str:
    """English prose that ships with Python (``pydoc_data.topics``), minus the topics the benchmarks hold out."""
    from pydoc_data.topics import topics

    return "\n".join(t for i, t in enumerate(topics.values()) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1)


def _text_from(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md"))
    if not files:
        raise InvalidConfigError(f"--calibrate {path}: no .txt or .md files there; use {CALIBRATE_CHOICES}")
    return "\n".join(p.read_text(errors="replace") for p in files)


def _has_tokenizer(checkpoint: Any) -> bool:
    return any(name.startswith("tokenizer") or name in ("vocab.txt", "vocab.json") for name in checkpoint.assets)


def text_batches(checkpoint: Any, text: str, samples: int, tokens: int = TEXT_TOKENS) -> list[torch.Tensor]:
    """``samples`` sequences of ``tokens`` token ids, spread evenly over ``text``, in batches of 8."""
    from transformers import AutoTokenizer

    if not _has_tokenizer(checkpoint):
        raise InvalidConfigError("the source has no tokenizer files, so it cannot be calibrated on text; "
                                 "use --calibrate none (weights only)")
    with tempfile.TemporaryDirectory() as folder:
        write_assets(checkpoint.assets, Path(folder))
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (ValueError, OSError) as exc:
            raise InvalidConfigError(f"the source's tokenizer cannot be loaded ({str(exc).splitlines()[0].strip()}); "
                                     "use --calibrate none (weights only)") from exc
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = max(1, min(samples, len(ids) // tokens))
    stride = max(tokens, (len(ids) - tokens) // max(1, n - 1)) if n > 1 else tokens
    rows = [ids[i * stride:i * stride + tokens] for i in range(n) if len(ids[i * stride:i * stride + tokens]) == tokens]
    if not rows:
        raise InvalidConfigError(f"calibration text has {len(ids)} tokens; at least {tokens} are needed")
    blocks = torch.tensor(rows, dtype=torch.long)
    return list(blocks.split(8))


def _photos() -> list[torch.Tensor]:
    """scikit-image's bundled photographs (no download), as [3, H, W] floats in [0, 1]."""
    try:
        import skimage.data as data
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "clock"):
        try:
            out.append(rgb(getattr(data, name)()))
        except Exception:  # an image this version does not bundle (it would need a download)
            continue
    return out


def rgb(image: Any) -> torch.Tensor:
    """An 8-bit grey, RGB or RGBA ``[H, W(, C)]`` array as a ``[3, H, W]`` float tensor in [0, 1]."""
    img = torch.as_tensor(image).float() / 255.0
    img = img.unsqueeze(-1).expand(*img.shape, 3) if img.dim() == 2 else img[..., :3]
    return img.permute(2, 0, 1).contiguous()


def _images_from(path: Path) -> list[torch.Tensor]:
    from PIL import Image

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in
                                                 (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
    if not files:
        raise InvalidConfigError(f"--calibrate {path}: no images there; use {CALIBRATE_CHOICES}")
    import numpy as np

    return [torch.as_tensor(np.asarray(Image.open(p).convert("RGB"))).float().permute(2, 0, 1) / 255.0
            for p in files]


def image_batches(photos: Sequence[torch.Tensor], samples: int, size: int, channels: int = 3) -> list[torch.Tensor]:
    """``samples`` random crops of ``photos``, resized to ``size`` and normalized like ImageNet, in batches of 8."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    crops = []
    for i in range(samples):
        img = photos[i % len(photos)]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.4 + 0.6 * torch.rand((), generator=gen).item()))
        top = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
        crop = img[:, top:top + side, left:left + side].unsqueeze(0)
        crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)[0]
        crops.append(((crop - mean) / std)[:channels])
    return list(torch.stack(crops).split(8))


# -- hooks -------------------------------------------------------------------------------------------------------
def _fingerprint(t: torch.Tensor) -> tuple:
    flat = t.detach().reshape(-1)
    return (tuple(flat.shape),) + tuple(round(float(v), 6) for v in flat[:8])


class _Match:
    """Which gene layer a module's weight is a copy of (fused weights: their first part)."""

    def __init__(self, genome: Genome):
        self.genome = genome
        self.index: dict[tuple, tuple[str, int | None]] = {}
        for name, gene in genome.items():
            layers = gene.tensor.unbind(0) if gene.stacked else [gene.tensor]
            for layer, t in enumerate(layers):
                self.index.setdefault(_fingerprint(t), (name, layer if gene.stacked else None))

    def find(self, weight: torch.Tensor) -> tuple[str, int | None] | None:
        w = weight.detach()
        candidates = [w]
        if w.dim() == 2:
            candidates += [w.T.contiguous()]
        for c in candidates:
            hit = self.index.get(_fingerprint(c))
            if hit is not None:
                return hit
            # a fused weight (q, k and v in one): its first part has the gene's shape
            for parts in (2, 3):
                if c.dim() == 2 and c.shape[0] % parts == 0:
                    hit = self.index.get(_fingerprint(c[: c.shape[0] // parts]))
                    if hit is not None:
                        return hit
        return None


def _layer_axes(gene: Gene) -> tuple[str, ...]:
    return gene.axes[1:] if gene.stacked else gene.axes


def _blocks(model: torch.nn.Module, depth: int) -> list[torch.nn.Module]:
    """The model's transformer blocks: the longest ModuleList with one entry per layer."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == depth]
    largest: torch.nn.Module | None = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)
    return list(largest) if largest is not None else []


class _Recorder:
    def __init__(self, genome: Genome, sizes: Mapping[str, int]):
        self.genome = genome
        self.depth = sizes.get(DEPTH, 1)
        self.hidden = torch.zeros(sizes["hidden"], dtype=torch.float64)
        self.inputs: dict[tuple[str, int | None], torch.Tensor] = {}  # mean square per input unit
        self.norms: dict[tuple[str, int | None], torch.Tensor] = {}  # energy per channel at a norm's input
        # samples seen per linear input (name, layer) and per norm input ("norm", name, layer)
        self.counts: dict[tuple[str, int | None] | tuple[str, str, int | None], int] = defaultdict(int)
        self.influence = torch.zeros(self.depth, dtype=torch.float64)
        self.influence_n = torch.zeros(self.depth, dtype=torch.float64)
        self.streams: dict[int, torch.Tensor] = {}  # this batch's stream at each block input (and after the last)
        self.distance = torch.zeros(self.depth + 1, self.depth + 1, dtype=torch.float64)
        self.distance_n = 0

    def linear(self, key: tuple[str, int | None], x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).double()
        sq = flat.square().sum(0)
        self.inputs[key] = self.inputs.get(key, 0) + sq
        self.counts[key] += flat.shape[0]

    def norm(self, key: tuple[str, int | None], x: torch.Tensor, centered: bool) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).double()
        if centered:
            flat = flat - flat.mean(-1, keepdim=True)
        self.norms[key] = self.norms.get(key, 0) + flat.square().sum(0)
        self.counts[("norm",) + key] += flat.shape[0]

    def block(self, layer: int, x: torch.Tensor, y: torch.Tensor) -> None:
        a, b = x.detach().reshape(-1, x.shape[-1]).double(), y.detach().reshape(-1, y.shape[-1]).double()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        self.influence[layer] += (1 - cos).sum()
        self.influence_n[layer] += cos.numel()
        self.streams[layer] = a.float()
        if layer == self.depth - 1:
            self.streams[self.depth] = b.float()

    def end_batch(self) -> None:
        """Pairwise angular distances between this batch's streams (every block seen, token for token)."""
        streams, self.streams = self.streams, {}
        if len(streams) != self.depth + 1 or len({s.shape for s in streams.values()}) != 1:
            return
        unit = torch.nn.functional.normalize(torch.stack([streams[i] for i in range(self.depth + 1)]), dim=-1)
        cos = torch.einsum("itd,jtd->ijt", unit, unit).clamp(-1, 1)
        self.distance += (cos.acos() / torch.pi).sum(-1).double()
        self.distance_n += unit.shape[1]


def _attach(model: torch.nn.Module, genome: Genome, sizes: Mapping[str, int], rec: _Recorder) -> list[Any]:
    match = _Match(genome)
    handles = []
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or isinstance(module, torch.nn.Embedding):
            continue
        hit = match.find(weight)
        if hit is None:
            continue
        gene = genome[hit[0]]
        axes = _layer_axes(gene)
        if gene.fan_in and weight.dim() == 2:
            def pre(mod, args, kwargs=None, key=hit):
                if args:
                    rec.linear(key, args[0])
            handles.append(module.register_forward_pre_hook(pre))
        elif axes == ("hidden",) and "norm" in type(module).__name__.lower():
            centered = "rms" not in type(module).__name__.lower()

            def norm_pre(mod, args, key=hit, centered=centered):
                if args:
                    rec.norm(key, args[0], centered)
            handles.append(module.register_forward_pre_hook(norm_pre))
    for layer, block in enumerate(_blocks(model, rec.depth)):
        def post(mod, args, kwargs, out, layer=layer):
            x = args[0] if args else kwargs.get("hidden_states")
            y = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape:
                rec.block(layer, x, y)
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    return handles


# -- scores ------------------------------------------------------------------------------------------------------
def _scores(rec: _Recorder, sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    genome, depth = rec.genome, rec.depth
    hidden = torch.zeros(sizes["hidden"], dtype=torch.float64)
    per_layer: dict[str, torch.Tensor] = {}
    for (name, layer), sq in rec.inputs.items():
        gene = genome[name]
        axes = _layer_axes(gene)
        inputs = axes[len(axes) - gene.fan_in:]
        ms = sq / max(1, rec.counts[(name, layer)])
        if inputs == ("hidden",):
            hidden += ms / ms.sum().clamp_min(1e-30)
            continue
        w = gene.tensor[layer] if layer is not None else gene.tensor
        w = w.double().reshape(-1, ms.numel())  # [outputs, inputs]
        contribution = ms * w.square().sum(0)  # E[x_j^2] * ||W[:, j]||^2
        if inputs == ("ffn",):
            role, units = "ffn", contribution
        elif inputs in (("heads", "head_dim"), ("kv_heads", "q_per_kv", "head_dim")):
            role, units = "heads", contribution.reshape(-1, sizes["head_dim"]).sum(-1)
        else:
            continue
        table = per_layer.setdefault(role, torch.zeros(depth, units.numel(), dtype=torch.float64))
        table[layer or 0] += units
    out: dict[str, torch.Tensor] = {"hidden": hidden.float()}
    out.update({role: t.float() for role, t in per_layer.items()})
    if rec.influence_n.sum() > 0:
        out["depth"] = (rec.influence / rec.influence_n.clamp_min(1)).float()
    if rec.distance_n:
        out["stream_distance"] = (rec.distance / rec.distance_n).float()
    for (name, layer), energy in rec.norms.items():
        key = f"energy:{name}"
        share = (energy / energy.sum().clamp_min(1e-30)).float()
        if layer is None:
            out[key] = share
        else:
            out.setdefault(key, torch.zeros(depth, share.numel()))[layer] = share
    return out


def weight_scores(genome: Genome, sizes: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Data-free estimates of the same scores: each unit's share of the weight energy of the genes that touch it
    (every gene counts equally), and no depth score (materialization then keeps layers evenly spread)."""
    depth = sizes.get(DEPTH, 1)
    hidden = torch.zeros(sizes["hidden"], dtype=torch.float64)
    per_layer: dict[str, torch.Tensor] = {}
    for gene in genome.values():
        t = gene.tensor.double()
        for dim, role in enumerate(gene.axes):
            if role == "hidden":
                energy = t.square().movedim(dim, -1).reshape(-1, t.shape[dim]).sum(0)
                hidden += energy / energy.sum().clamp_min(1e-30)
            elif role in ("ffn", "heads") and gene.stacked:
                moved = t.square().movedim(dim, 1)
                energy = moved.reshape(t.shape[0], t.shape[dim], -1).sum(-1)
                if role == "heads" and "kv_heads" in gene.axes:
                    continue
                table = per_layer.setdefault(role, torch.zeros(depth, t.shape[dim], dtype=torch.float64))
                table += energy / energy.sum(-1, keepdim=True).clamp_min(1e-30)
            elif role == "kv_heads" and gene.stacked and "q_per_kv" in gene.axes:
                q = gene.axes.index("q_per_kv")
                moved = t.square().movedim((dim, q), (1, 2))
                energy = moved.reshape(t.shape[0], t.shape[dim] * t.shape[q], -1).sum(-1)
                table = per_layer.setdefault("heads", torch.zeros(depth, energy.shape[1], dtype=torch.float64))
                table += energy / energy.sum(-1, keepdim=True).clamp_min(1e-30)
    return {"hidden": hidden.float(), **{role: t.float() for role, t in per_layer.items()}}


# -- entry point -------------------------------------------------------------------------------------------------
def structure(genome: Genome) -> dict[str, bool]:
    """What resizing needs to know of the architecture: ``pre_norm``, whether blocks read the residual stream
    through a norm and leave it unnormalized (a final norm after the last block is the mark of that: GPT-2, Llama,
    ViT; post-norm BERT has none)."""
    return {"pre_norm": "final_norm.weight" in genome}


def family_hints(adapter: Any) -> dict[str, str]:
    """What the family's adapter says about resizing it, stored with the scores (``depth_rule``: which blocks a
    shallower target keeps)."""
    rule = getattr(adapter, "depth_rule", None)
    return {"depth_rule": str(rule)} if rule else {}


def calibrate(adapter: Any, checkpoint: Any, genome: Genome, data: str | Path = "default",
              samples: int = DEFAULT_SAMPLES, device: Any = None) -> Calibration:
    """Importance scores of ``checkpoint``'s units (see the module docstring). ``data``: ``"default"``, ``"none"``
    or a path; ``genome``: the source's genes, in memory."""
    calibration = _calibrate(adapter, checkpoint, genome, data, samples, device)
    calibration.meta.update(family_hints(adapter))
    return calibration


def _calibrate(adapter: Any, checkpoint: Any, genome: Genome, data: str | Path, samples: int,
               device: Any) -> Calibration:
    start = time.perf_counter()
    config = checkpoint.config
    sizes = adapter.sizes(config)
    if str(data) == "none":
        return Calibration(weight_scores(genome, sizes), {"data": "none (weights only)", "samples": 0,
                                                          "seconds": round(time.perf_counter() - start, 2),
                                                          **structure(genome)})
    if not isinstance(samples, int) or samples < 1:
        raise InvalidConfigError(f"--calibrate-samples must be a positive whole number, got {samples!r}")
    model = adapter.build(adapter.target_config(config), genome, device=device or "cpu")
    model.eval()
    vision = getattr(model, "main_input_name", "input_ids") == "pixel_values"
    path = None if str(data) == "default" else Path(data).expanduser()
    if path is not None and not path.exists():
        raise InvalidConfigError(f"--calibrate {data}: no such file or folder; use {CALIBRATE_CHOICES}")
    if vision:
        photos = _photos() if path is None else _images_from(path)
        if not photos:
            raise InvalidConfigError("no calibration images: scikit-image is not installed; pass --calibrate "
                                     "FOLDER (your images) or --calibrate none (weights only)")
        size = int(config.get("image_size") or IMAGE_SIZE)
        size = min(size, IMAGE_SIZE) if "dinov2" in str(config.get("model_type", "")) else size
        batches = image_batches(photos, samples, size, int(config.get("num_channels") or 3))
        what = "scikit-image photographs" if path is None else str(path)
    else:
        text = prose() if path is None else _text_from(path)
        try:
            batches = text_batches(checkpoint, text, samples)
        except InvalidConfigError as exc:
            if path is not None:
                raise
            # the built-in prose needs the source's tokenizer: without one, rank from the weights and say so
            meta = {"data": f"none (weights only: {str(exc).split(';')[0]})", "samples": 0,
                    "seconds": round(time.perf_counter() - start, 2), **structure(genome)}
            return Calibration(weight_scores(genome, sizes), meta)
        what = "pydoc_data prose" if path is None else str(path)
    rec = _Recorder(genome, sizes)
    handles = _attach(model, genome, sizes, rec)
    # the base model: an LM head's vocabulary projection costs a lot and measures nothing the norms don't
    body = getattr(model, "base_model", model)
    tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(next(model.parameters()).device)
                body(**{getattr(model, "main_input_name", "input_ids"): batch})
                rec.end_batch()
                tokens += batch.shape[0] * (batch.shape[1] if batch.dim() == 2 else 1)
    finally:
        for h in handles:
            h.remove()
    if not rec.inputs:
        raise InvalidConfigError(f"calibration found no layer of this {adapter.name} model to measure; "
                                 "use --calibrate none (weights only)")
    scores = _scores(rec, sizes)
    meta = {"data": what, "samples": sum(len(b) for b in batches), "tokens" if not vision else "images":
            tokens if not vision else sum(len(b) for b in batches), "seconds": round(time.perf_counter() - start, 2),
            "device": str(next(model.parameters()).device), **structure(genome)}
    return Calibration(scores, meta)


__all__ = ["DEFAULT_SAMPLES", "calibrate", "prose", "weight_scores"]
