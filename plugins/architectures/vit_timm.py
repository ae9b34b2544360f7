"""timm vision transformers (``VisionTransformer``, DeiT's ``VisionTransformerDistilled``): layout, configs, model
building and saving. The sources ``zoo learngene add`` accepts for them are read by
:mod:`zoo_plugins.sources.timm_reader`.

A timm config in zoo is ``{"model_type": "timm-vit", "architecture": NAME, "model_args": {...}}``: the model
name sets the defaults (activation, norm layer, pretrained_cfg) and ``model_args`` every structural argument, so
``timm.create_model(NAME, **model_args)`` rebuilds it. Weights always load through timm itself (hub, or
``pretrained_cfg_overlay=dict(file=...)``, or a ``local-dir:`` folder), so timm's checkpoint filters apply.
timm is imported only when a timm model is read or built: zoo works without it for transformers models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidConfigError

from .vit_common import Layout, ViTSpec, compact, pair, ratio_for

if TYPE_CHECKING:
    import torch

MODEL_TYPE = "timm-vit"
SKIP_INIT = "skip"  # timm's init is wasted (and slow on CPU) when weights are loaded right after
L = "blocks.{i}."
LAYOUT_KEYS: dict[str, Any] = {
    "embed.patch.weight": "patch_embed.proj.weight",
    "embed.patch.bias": "patch_embed.proj.bias",
    "embed.cls": "cls_token",
    "embed.dist": "dist_token",
    "embed.registers": "reg_token",
    "embed.pos_cls": "pos_embed:cls",
    "embed.pos_dist": "pos_embed:dist",
    "embed.pos": "pos_embed:grid",
    "attn.norm.weight": L + "norm1.weight",
    "attn.norm.bias": L + "norm1.bias",
    **{f"attn.{p}.weight": (L + "attn.qkv.weight", n) for n, p in enumerate("qkv")},
    **{f"attn.{p}.bias": (L + "attn.qkv.bias", n) for n, p in enumerate("qkv")},
    "attn.o.weight": L + "attn.proj.weight",
    "attn.o.bias": L + "attn.proj.bias",
    "attn.scale": L + "ls1.gamma",
    "mlp.norm.weight": L + "norm2.weight",
    "mlp.norm.bias": L + "norm2.bias",
    "mlp.up.weight": L + "mlp.fc1.weight",
    "mlp.up.bias": L + "mlp.fc1.bias",
    "mlp.down.weight": L + "mlp.fc2.weight",
    "mlp.down.bias": L + "mlp.fc2.bias",
    "mlp.scale": L + "ls2.gamma",
    "final_norm.weight": "norm.weight",
    "final_norm.bias": "norm.bias",
    "head_norm.weight": "fc_norm.weight",
    "head_norm.bias": "fc_norm.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
    "head_dist.weight": "head_dist.weight",
    "head_dist.bias": "head_dist.bias",
}
# timm model names used when a transformers model is written for timm, by width
FAMILIES = {
    "dinov2": ("vit_{}_patch14_dinov2", {"small": 384, "base": 768, "large": 1024}),
    "distilled": ("deit_{}_distilled_patch16_224", {"tiny": 192, "small": 384, "base": 768}),
    "plain": ("vit_{}_patch16_224", {"tiny": 192, "small": 384, "base": 768, "large": 1024}),
}


def require_timm(what: str) -> Any:
    try:
        import timm
    except ImportError:
        raise InvalidConfigError(f"{what} needs timm; install it with `pip install timm`") from None
    return timm


# -- configs ---------------------------------------------------------------------------------------------------
def spec_of(config: dict[str, Any]) -> ViTSpec:
    a = config["model_args"]
    hidden = int(a["embed_dim"])
    return ViTSpec(
        library="timm", depth=int(a["depth"]), hidden=hidden, heads=int(a["num_heads"]),
        ffn=int(hidden * float(a["mlp_ratio"])), img_size=pair(a["img_size"], "img_size"),
        patch_size=pair(a["patch_size"], "patch_size"), channels=int(a.get("in_chans", 3)),
        class_token=bool(a.get("class_token", True)), dist_token="distilled" in config["architecture"],
        reg_tokens=int(a.get("reg_tokens", 0)), embed_prefix=not a.get("no_embed_class", False),
        layer_scale=a.get("init_values") is not None, qkv_bias=bool(a.get("qkv_bias", True)),
        num_classes=int(a.get("num_classes", 0)), pool=a.get("global_pool", "token"),
        fc_norm=bool(a.get("fc_norm")), eps=1e-6, extra={"architecture": config["architecture"]},
    )


def architecture_for(spec: ViTSpec) -> str:
    """A timm model name whose defaults fit ``spec`` (every size is passed explicitly anyway)."""
    if "architecture" in spec.extra:
        return spec.extra["architecture"]
    family = "dinov2" if spec.layer_scale else "distilled" if spec.dist_token else "plain"
    pattern, widths = FAMILIES[family]
    size = min(widths, key=lambda s: abs(widths[s] - spec.hidden))
    return pattern.format(size)


def config_of(spec: ViTSpec, base: dict[str, Any] | None = None) -> dict[str, Any]:
    args = dict((base or {}).get("model_args", {}))
    args.update(
        img_size=compact(spec.img_size), patch_size=compact(spec.patch_size), in_chans=spec.channels,
        embed_dim=spec.hidden, depth=spec.depth, num_heads=spec.heads, mlp_ratio=ratio_for(spec.ffn, spec.hidden),
        qkv_bias=spec.qkv_bias, init_values=(args.get("init_values") or 1e-5) if spec.layer_scale else None,
        class_token=spec.class_token, no_embed_class=not spec.embed_prefix, reg_tokens=spec.reg_tokens,
        global_pool=spec.pool, fc_norm=spec.fc_norm, num_classes=spec.num_classes,
    )
    return {"model_type": MODEL_TYPE, "architecture": architecture_for(spec), "model_args": args}


def model_args(model: torch.nn.Module) -> dict[str, Any]:
    """The structural arguments that rebuild ``model`` (read from the instance, not from its name)."""
    import torch

    pe, block = model.patch_embed, model.blocks[0]
    return {
        "img_size": compact(tuple(pe.img_size)), "patch_size": compact(tuple(pe.patch_size)),
        "in_chans": pe.proj.in_channels, "embed_dim": model.embed_dim, "depth": len(model.blocks),
        "num_heads": block.attn.num_heads, "mlp_ratio": block.mlp.fc1.out_features / model.embed_dim,
        "qkv_bias": block.attn.qkv.bias is not None,
        "init_values": 1e-5 if hasattr(block.ls1, "gamma") else None,
        "class_token": model.cls_token is not None, "no_embed_class": bool(model.no_embed_class),
        "reg_tokens": int(model.num_reg_tokens), "global_pool": model.global_pool,
        "fc_norm": not isinstance(model.fc_norm, torch.nn.Identity), "num_classes": int(model.num_classes),
    }


def config_from_model(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """zoo's config for a timm model; refuses ViT variants whose extra parameters or computation the genes do not
    describe."""
    import torch

    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise InvalidConfigError(f"timm model '{name}' is a {type(model).__name__}, not a VisionTransformer; "
                                 "zoo's vit adapter reads ViT, DeiT and DINOv2 models")
    block = model.blocks[0]
    problems = [what for what, bad in (
        ("a non-standard block", type(block) is not Block),
        ("an activation other than GELU", not isinstance(getattr(block.mlp, "act", None), torch.nn.GELU)),
        ("registers with position embeddings", model.num_reg_tokens and not model.no_embed_class),
    ) if bad]
    config = {"model_type": MODEL_TYPE, "architecture": name, "model_args": model_args(model)}
    unknown = LAYOUT.unknown_keys(model.state_dict(), spec_of(config))
    if unknown:
        problems.append("parameters " + ", ".join(unknown[:4]) + (" ..." if len(unknown) > 4 else ""))
    if problems:
        raise InvalidConfigError(f"timm model '{name}' has {'; '.join(problems)}, which zoo's vit genes do not cover")
    return config


LAYOUT = Layout("timm", LAYOUT_KEYS.items(), "pos_embed", spec_of=spec_of)


# -- building, saving, loading -----------------------------------------------------------------------------------
def create(config: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    """The model, without timm's weight init (slow on CPU, and the genes overwrite it): call :func:`init_fresh`."""
    import torch

    timm = require_timm("building a timm model")
    with torch.device(device):
        return timm.create_model(config["architecture"], pretrained=False, weight_init=SKIP_INIT,
                                 **config["model_args"])


def init_fresh(model: torch.nn.Module, fresh: list[str]) -> None:
    """timm's own init for the modules holding parameters no gene covered (a new classifier, ...)."""
    from timm.models.vision_transformer import init_weights_vit_timm

    for module_name in sorted({name.rpartition(".")[0] for name in fresh}):
        if module_name:
            init_weights_vit_timm(model.get_submodule(module_name))


def save(model: torch.nn.Module, config: dict[str, Any], out_dir: Path) -> None:
    """``model.safetensors`` with timm's key names, and a timm ``config.json`` (``local-dir:`` loads the folder)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(out_dir / "model.safetensors"))
    args = config["model_args"]
    pretrained = {k: v for k, v in dict(getattr(model, "pretrained_cfg", {}) or {}).items()
                  if k not in ("url", "hf_hub_id", "file", "source", "state_dict", "tag", "architecture")
                  and _jsonable(v)}
    size = pair(args["img_size"], "img_size")
    pretrained.update(input_size=[args.get("in_chans", 3), *size], num_classes=args["num_classes"])
    (out_dir / "config.json").write_text(json.dumps({
        "architecture": config["architecture"], "num_classes": args["num_classes"],
        "num_features": args["embed_dim"], "global_pool": args["global_pool"],
        "model_args": args, "pretrained_cfg": pretrained,
    }, indent=2) + "\n")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def default_args(name: str) -> dict[str, Any]:
    """The arguments ``timm.create_model(name)`` builds with (on the meta device: no memory, no init)."""
    import torch

    timm = require_timm("timm models")
    with torch.device("meta"):
        return model_args(timm.create_model(name, pretrained=False))


def load_code(config: dict[str, Any], out_dir: Path) -> str:
    """The ``timm.create_model`` call that loads the saved checkpoint: the arguments that differ from the name's."""
    name, args = config["architecture"], config["model_args"]
    try:
        defaults = default_args(name)
    except Exception:  # a model timm cannot build on the meta device: print every argument
        defaults = {}
    shown = {k: v for k, v in args.items() if k == "num_classes" or defaults.get(k) != v}
    width = args["embed_dim"]
    if "mlp_ratio" in shown and int(width * defaults["mlp_ratio"]) == int(width * args["mlp_ratio"]):
        shown.pop("mlp_ratio")  # the same MLP width, written another way
    file = str(out_dir / "model.safetensors")
    kwargs = "".join(f", {k}={v!r}" for k, v in shown.items())
    return (f"timm.create_model({name!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={file!r}, num_classes={args['num_classes']}){kwargs})")
