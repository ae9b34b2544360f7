"""timm vision transformers as learngene sources: ``timm/NAME`` or ``timm:NAME``, an alias (``deit-base``), a bare
ViT name (``vit_small_patch14_dinov2``), each optionally followed by ``@FILE`` (a timm checkpoint on disk), and
folders timm wrote (docs/vision.md lists them).

Weights always load through timm itself (hub, ``pretrained_cfg_overlay=dict(file=...)`` or a ``local-dir:``
folder), so timm's checkpoint filters apply; the config comes from the model built
(:func:`zoo_plugins.architectures.vit_timm.config_from_model`). The ``vit`` plugin serves these sources through its
``resolve_source`` hook, as it always has (``ZOO_DISABLE_PLUGINS=vit`` turns them off with the family).
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import SourceNotFoundError
from zoo.sources import Checkpoint
from zoo_plugins.architectures.vit_timm import SKIP_INIT, config_from_model, require_timm

if TYPE_CHECKING:
    import torch

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
