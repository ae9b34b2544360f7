"""timm vision transformers (``VisionTransformer``, DeiT's ``VisionTransformerDistilled``): layout, configs, model
building and saving, and the sources ``zoo learngene add`` accepts for them.

A timm config in zoo is ``{"model_type": "timm-vit", "architecture": NAME, "model_args": {...}}``: the model
name sets the defaults (activation, norm layer, pretrained_cfg) and ``model_args`` every structural argument, so
``timm.create_model(NAME, **model_args)`` rebuilds it. Weights always load through timm itself (hub, or
``pretrained_cfg_overlay=dict(file=...)``, or a ``local-dir:`` folder), so timm's checkpoint filters apply.
timm is imported only when a timm model is read or built: zoo works without it for transformers models.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidConfigError, SourceNotFoundError
from zoo.sources import Checkpoint

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
ALIASES = {
    "deit-tiny": "deit_tiny_patch16_224",
    "deit-small": "deit_small_patch16_224",
    "deit-base": "deit_base_patch16_224",
    "deit-tiny-distilled": "deit_tiny_distilled_patch16_224",
    "deit-small-distilled": "deit_small_distilled_patch16_224",
    "deit-base-distilled": "deit_base_distilled_patch16_224",
    "vit-tiny": "vit_tiny_patch16_224",
    "vit-small": "vit_small_patch16_224",
    "vit-base": "vit_base_patch16_224",
    "vit-large": "vit_large_patch16_224",
    "dinov2-small": "vit_small_patch14_dinov2",
    "dinov2-base": "vit_base_patch14_dinov2",
    "dinov2-large": "vit_large_patch14_dinov2",
}
# a bare timm model name zoo claims (anything else may be a hub id)
TIMM_NAME = re.compile(r"^(vit|deit3?)_[a-z0-9_]+(\.[\w-]+)?$")
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


# -- sources ---------------------------------------------------------------------------------------------------
def parse(source: str) -> tuple[str, str, str | None] | None:
    """``(what the user named, timm model name, file or None)`` if ``source`` names a timm model, else None.

    Accepted: ``timm/NAME`` or ``timm:NAME``, an alias (``deit-base``), a bare ViT name (``vit_small_patch14_dinov2``),
    each optionally followed by ``@FILE``, a timm checkpoint on disk.
    """
    model, _, file = source.partition("@")
    model = model.strip()
    for prefix in ("timm/", "timm:"):
        if model.startswith(prefix):
            return model, model[len(prefix):], file or None
    if model in ALIASES:
        return model, ALIASES[model], file or None
    if TIMM_NAME.match(model):
        return model, model, file or None
    return None


def is_timm_folder(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "architecture" in config and "model_type" not in config


def resolve(source: str) -> Checkpoint | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return from_folder(path, source) if is_timm_folder(path) else None
    if path.exists():
        return None
    parsed = parse(source)
    if parsed is None:
        return None
    model, name, file = parsed
    if file is not None:
        return from_file(model, name, Path(file).expanduser(), source)
    return from_hub(model, name, source)


def _checkpoint(model: torch.nn.Module, name: str, ref: str, files: list[Path], root: Path,
                hub_id: str | None = None, default_name: str | None = None) -> Checkpoint:
    from timm.models import split_model_name_tag

    arch = split_model_name_tag(name)[0]
    config = config_from_model(model, arch)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return Checkpoint(ref, root, config, files, hub_id=hub_id, loader=lambda: state, default_name=default_name)


def _check_name(timm: Any, model: str, name: str) -> None:
    if not timm.is_model(name):
        raise SourceNotFoundError(f"'{model}' is not a timm model name (see timm.list_models('vit_*')); "
                                  f"aliases: {', '.join(sorted(ALIASES))}")


def _classes_in(file: Path) -> int:
    """The class count of a timm checkpoint's head (0: no head), read without building anything."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), "pt") as fh:
            return fh.get_slice("head.weight").get_shape()[0] if "head.weight" in fh.keys() else 0
    from timm.models import load_state_dict

    head = load_state_dict(str(file)).get("head.weight")
    return int(head.shape[0]) if head is not None else 0


def from_file(model: str, name: str, file: Path, ref: str) -> Checkpoint:
    timm = require_timm(f"'{model}'")
    if not file.is_file():
        raise SourceNotFoundError(f"'{file}' does not exist; give a timm checkpoint file after '@', "
                                  f"e.g. {model}@./{name}.safetensors")
    _check_name(timm, model, name)
    try:
        classes = _classes_in(file)
        net = timm.create_model(name, pretrained=True, num_classes=classes,
                                pretrained_cfg_overlay=dict(file=str(file), num_classes=classes), weight_init=SKIP_INIT)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SourceNotFoundError(f"timm could not load '{file}' as {name}: {_load_error(exc)}; is it a checkpoint "
                                  f"of {name}? name the timm model it was saved from (MODEL@FILE)") from None
    return _checkpoint(net, name, ref, [file], file.parent, default_name=name)


def _load_error(exc: BaseException) -> str:
    """The cause in one line. torch's ``load_state_dict`` error opens with a header ("Error(s) in loading
    state_dict for VisionTransformer:") and lists one problem per line; a size mismatch names the cause best, and a
    list of missing or unexpected keys is cut to its first names and a count."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if not lines[0].startswith("Error(s) in loading state_dict") or len(lines) == 1:
        return lines[0]
    problems = sorted(lines[1:], key=lambda p: not p.startswith("size mismatch"))
    first = problems[0].rstrip(". ")
    head, sep, rest = first.partition(" in state_dict: ")
    if sep:
        keys = re.findall(r'"([^"]+)"', rest)
        first = f"{head}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''} ({len(keys)} keys)"
    return first + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")


def from_folder(folder: Path, ref: str) -> Checkpoint:
    timm = require_timm(f"the timm model folder '{ref}'")
    try:
        net = timm.create_model(f"local-dir:{folder}", pretrained=True, weight_init=SKIP_INIT)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SourceNotFoundError(f"timm could not load the folder '{ref}': {str(exc).splitlines()[0]}") from None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth"))[:1]
    return _checkpoint(net, net.pretrained_cfg["architecture"], ref, files, folder)


def _hub_unreachable() -> bool:
    """True when the hub cannot be reached: fail at once instead of after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False  # a proxy may resolve what this machine cannot
    host = re.sub(r"^https?://", "", os.environ.get("HF_ENDPOINT", "https://huggingface.co")).split("/")[0]
    try:
        socket.getaddrinfo(host.split(":")[0], 443)
    except OSError:
        return True
    return False


def from_hub(model: str, name: str, ref: str) -> Checkpoint:
    timm = require_timm(f"'{model}'")
    _check_name(timm, model, name)
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    cached = _cached_files(hub_id)
    local = (f"for weights on disk use `zoo learngene add {model}@PATH` (a timm .safetensors, .pth or .bin "
             f"checkpoint of {name}) or a timm model folder (config.json + model.safetensors)")
    if not cached and _hub_unreachable():
        raise SourceNotFoundError(f"'{model}' is timm's {name}, whose weights are not in the local cache and the "
                                  f"Hugging Face Hub is unreachable (no network?); {local}")
    try:
        if cached:  # through timm's file route: no request to the hub at all
            net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(cached[0])),
                                    weight_init=SKIP_INIT)
        else:
            net = timm.create_model(name, pretrained=True, weight_init=SKIP_INIT)
    except Exception as exc:  # the hub client raises many kinds; all mean "not available here"
        raise SourceNotFoundError(f"'{model}' is timm's {name}, whose weights could not be loaded: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; {local}") from None
    files = cached or _cached_files(hub_id)
    return _checkpoint(net, name, ref, files, files[0].parent if files else Path.cwd(), hub_id=hub_id)


def _cached_files(hub_id: str | None) -> list[Path]:
    if not hub_id:
        return []
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return [Path(found)]
    return []
