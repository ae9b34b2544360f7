"""What every vision-transformer layout shares: the library-independent spec, the genes, and a :class:`Layout`
that reads and writes one library's state dict through :class:`~zoo.hf.WeightMap` s.

A learngene from timm materializes as a transformers model and the reverse, because both are read into the same
genes. Position embeddings are split before reading: the class and distillation token positions become genes of
their own, and the patch positions become a ``(grid_h, grid_w, hidden)`` gene, so a DCT per axis is a 2-D spectrum
of the token grid (resizing it changes the image or patch size without touching the prefix positions).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidConfigError
from zoo.hf import TransformersAdapter, WeightMap

if TYPE_CHECKING:
    import torch

H, HEADS, HD, FFN = "hidden", "heads", "head_dim", "ffn"
LIBRARIES = ("timm", "hf")

# gene -> (axes of the canonical tensor, fan_in)
GENES: dict[str, tuple[tuple[str, ...], int]] = {
    "embed.patch.weight": ((H, "channels", "patch_h", "patch_w"), 3),
    "embed.patch.bias": ((H,), 0),
    "embed.cls": ((H,), 0),
    "embed.dist": ((H,), 0),
    "embed.registers": (("registers", H), 0),
    "embed.mask": ((H,), 0),
    "embed.pos_cls": ((H,), 0),
    "embed.pos_dist": ((H,), 0),
    "embed.pos": (("grid_h", "grid_w", H), 0),
    "attn.norm.weight": ((H,), 0),
    "attn.norm.bias": ((H,), 0),
    **{f"attn.{p}.weight": ((HEADS, HD, H), 1) for p in "qkv"},
    **{f"attn.{p}.bias": ((HEADS, HD), 0) for p in "qkv"},
    "attn.o.weight": ((H, HEADS, HD), 2),
    "attn.o.bias": ((H,), 0),
    "attn.scale": ((H,), 0),  # LayerScale after attention
    "mlp.norm.weight": ((H,), 0),
    "mlp.norm.bias": ((H,), 0),
    "mlp.up.weight": ((FFN, H), 1),
    "mlp.up.bias": ((FFN,), 0),
    "mlp.down.weight": ((H, FFN), 1),
    "mlp.down.bias": ((H,), 0),
    "mlp.scale": ((H,), 0),  # LayerScale after the MLP
    "final_norm.weight": ((H,), 0),
    "final_norm.bias": ((H,), 0),
    "head_norm.weight": ((H,), 0),  # timm's fc_norm (after average pooling)
    "head_norm.bias": ((H,), 0),
    "pooler.weight": ((H, H), 1),  # transformers ViTModel / DeiTModel pooler
    "pooler.bias": ((H,), 0),
    "head.weight": (("classes", H), 1),
    "head.bias": (("classes",), 0),
    "head_dist.weight": (("classes", H), 1),
    "head_dist.bias": (("classes",), 0),
}
# without these a checkpoint is not a ViT zoo can read
REQUIRED = frozenset({"embed.patch.weight", "embed.pos", "attn.q.weight", "attn.k.weight", "attn.v.weight",
                      "attn.o.weight", "mlp.up.weight", "mlp.down.weight"})
POSITION_PARTS = {"cls": "embed.pos_cls", "dist": "embed.pos_dist"}


def pair(value: Any, option: str) -> tuple[int, int]:
    """An image or patch size given as ``n`` or ``[h, w]``."""
    items = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
        raise InvalidConfigError(f"{option} must be a positive whole number or [height, width], got {value!r}")
    return int(items[0]), int(items[1])


def compact(size: tuple[int, int]) -> int | list[int]:
    return size[0] if size[0] == size[1] else list(size)


@dataclass
class ViTSpec:
    """A vision transformer, whatever library it comes from."""

    library: str  # "timm" or "hf"
    depth: int
    hidden: int
    heads: int
    ffn: int
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    channels: int = 3
    class_token: bool = True
    dist_token: bool = False
    reg_tokens: int = 0
    embed_prefix: bool = True  # the class/dist tokens have position embeddings (timm's not no_embed_class)
    layer_scale: bool = False
    qkv_bias: bool = True
    num_classes: int = 0
    pool: str = "token"  # timm global_pool
    fc_norm: bool = False
    eps: float = 1e-6
    extra: dict[str, Any] = field(default_factory=dict)  # library-specific settings (timm: the model name)

    @property
    def grid(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1]

    def position_prefix(self) -> list[str]:
        """The tokens before the patches that have a position embedding, in order."""
        if not self.embed_prefix:
            return []
        return [name for name, on in (("cls", self.class_token), ("dist", self.dist_token)) if on]

    def sizes(self) -> dict[str, int]:
        if self.hidden % self.heads:
            raise InvalidConfigError(f"{self.heads} heads do not divide the width {self.hidden}")
        sizes = {"depth": self.depth, H: self.hidden, HEADS: self.heads, HD: self.hidden // self.heads,
                 FFN: self.ffn, "channels": self.channels, "patch_h": self.patch_size[0],
                 "patch_w": self.patch_size[1], "grid_h": self.grid[0], "grid_w": self.grid[1]}
        if self.num_classes:
            sizes["classes"] = self.num_classes
        if self.reg_tokens:
            sizes["registers"] = self.reg_tokens
        return sizes

    def parameter_count(self) -> int:
        h, f = self.hidden, self.ffn
        layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h + (2 * h if self.layer_scale else 0)
        tokens = self.class_token + self.dist_token + self.reg_tokens
        embed = h * self.channels * self.patch_size[0] * self.patch_size[1] + h
        embed += (self.grid[0] * self.grid[1] + len(self.position_prefix()) + tokens) * h
        head = self.num_classes * (h + 1) * (1 + self.dist_token)
        return self.depth * layer + embed + 2 * h + head


def ratio_for(ffn: int, hidden: int) -> float:
    """An ``mlp_ratio`` with ``int(hidden * ratio) == ffn`` (how timm and Dinov2 size the MLP)."""
    ratio = ffn / hidden
    while int(hidden * ratio) < ffn:  # float rounding can land just below
        ratio = math.nextafter(ratio, math.inf)
    return ratio


class Layout(TransformersAdapter):
    """One library's names for the ViT genes.

    ``keys`` are ``(gene, state-dict key)`` pairs (``{i}`` for the layer; ``(key, part)`` for one third of a fused
    qkv; a gene may have several keys, one per model class). ``renames`` turn in-memory names into checkpoint
    names (transformers 5 renames ViT attention weights when it loads them; ``save_pretrained`` writes the old
    names back). Position embeddings live under ``position_key``
    and are split into ``<key>:cls``, ``<key>:dist`` and ``<key>:grid`` before the weight maps see them.
    """

    def __init__(self, name: str, keys: Iterable[tuple[str, str | tuple[str, int]]], position_key: str,
                 prefixes: tuple[str, ...] = (), renames: tuple[tuple[str, str], ...] = (),
                 spec_of: Any = None):
        self.name = name
        self.position_key = position_key
        self.key_prefixes = prefixes
        self.renames = tuple((re.compile(a), b) for a, b in renames)
        self.spec_of = spec_of
        maps = []
        for gene, where in keys:
            axes, fan_in = GENES[gene]
            key, part = (where, (0, 1)) if isinstance(where, str) else (where[0], (where[1], 3))
            maps.append(WeightMap(gene, key, axes, part=part, optional=gene not in REQUIRED, fan_in=fan_in))
        self.weights = tuple(maps)

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        return self.spec_of(config).sizes()

    def checkpoint_name(self, key: str) -> str:
        for pattern, replacement in self.renames:
            key = pattern.sub(replacement, key)
        for prefix in self.key_prefixes:
            if key.startswith(prefix):
                return key[len(prefix):]
        return key

    def _split_positions(self, sd: dict[str, torch.Tensor], spec: ViTSpec) -> None:
        pos = sd.pop(self.position_key, None)
        if pos is None:
            return
        pos = pos.reshape(-1, pos.shape[-1])
        prefix = spec.position_prefix()
        if pos.shape[0] != len(prefix) + spec.grid[0] * spec.grid[1]:
            raise InvalidConfigError(f"'{self.position_key}' has {pos.shape[0]} positions; the config implies "
                                     f"{len(prefix)} prefix tokens and a {spec.grid[0]}x{spec.grid[1]} grid")
        for n, part in enumerate(prefix):
            sd[f"{self.position_key}:{part}"] = pos[n]
        sd[f"{self.position_key}:grid"] = pos[len(prefix):]

    def normalized(self, state_dict: Mapping[str, torch.Tensor], spec: ViTSpec) -> dict[str, torch.Tensor]:
        sd = {self.checkpoint_name(k): v for k, v in state_dict.items()}
        self._split_positions(sd, spec)
        return sd

    def read(self, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]):
        spec = self.spec_of(config)
        sd = self.normalized(state_dict, spec)
        heads = [wm.key for wm in self.weights if "classes" in wm.axes and wm.key in sd]
        if heads and not spec.num_classes:
            raise InvalidConfigError(f"the checkpoint has a classifier ({heads[0]}) but its config describes a model "
                                     "without one (for transformers: set 'architectures' to the class with the head)")
        return self.to_genome(sd, config)

    def unknown_keys(self, state_dict: Mapping[str, torch.Tensor], spec: ViTSpec) -> list[str]:
        """Parameters of this checkpoint no gene reads (a feature zoo's ViT genes do not cover)."""
        known = {wm.key.format(i=i) for wm in self.weights for i in range(spec.depth)}
        return sorted(k for k in self.normalized(state_dict, spec) if k not in known)

    def write(self, genome: Mapping[str, Any], config: Mapping[str, Any],
              template: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """State-dict entries (``template``'s real names) for the genes this model has, and the genes it has no
        place for."""
        import torch

        spec = self.spec_of(config)
        real = {self.checkpoint_name(k): k for k in template}
        norm = {name: template[key] for name, key in real.items()}
        self._split_positions(norm, spec)
        usable = [wm for wm in self.weights if wm.key.format(i=0) in norm and wm.gene in genome]
        layout = copy.copy(self)
        layout.weights = tuple(usable)
        values = layout.from_genome({wm.gene: genome[wm.gene] for wm in usable}, config, norm)
        used = {wm.gene for wm in usable}
        pos_parts = [k for k in norm if k.startswith(self.position_key + ":")]
        if pos_parts and any(k in values for k in pos_parts):
            # a prefix position the genes lack (e.g. from a timm no_embed_class source) is zero: the token alone
            parts = [values.get(k, torch.zeros_like(norm[k]) if not k.endswith(":grid") else norm[k])
                     for k in (f"{self.position_key}:{p}" for p in [*spec.position_prefix(), "grid"])]
            whole = template[real[self.position_key]]
            values[self.position_key] = torch.cat([p.reshape(-1, whole.shape[-1]) for p in parts]).reshape(whole.shape)
        out = {real[k]: v for k, v in values.items() if k in real}
        return out, sorted(set(genome) - used)
