"""The files beside a materialized model's weights: the source's tokenizer, processor, chat template and
sentence-transformers modules, fitted to the target's sizes, and an image processor where a vision source had none.

Files from the registry are taken only under the names in :data:`zoo.sources.ASSET_FILES` (a shared registry is
not trusted to name paths).
"""

from __future__ import annotations

import json
from typing import Any

from .sources import ASSET_FILES, SOURCE_INFO

POOLING = "1_Pooling/config.json"
PROCESSOR = "preprocessor_config.json"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def source_info(assets: dict[str, bytes]) -> dict[str, Any]:
    """What the learngene recorded about its source (license, hub id); ``{}`` for learngenes added before."""
    try:
        info = json.loads(assets.get(SOURCE_INFO, b"{}"))
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def carried(assets: dict[str, bytes], config: dict[str, Any], family: str, sizes: dict[str, int],
            library: str = "transformers") -> tuple[dict[str, bytes], list[str]]:
    """``(files by relative path, the names zoo generated rather than carried)``."""
    files = {name: data for name, data in assets.items() if name in ASSET_FILES}
    generated: list[str] = []
    if POOLING in files and "hidden" in sizes:  # the pooling layer is as wide as the model
        try:
            pooling = json.loads(files[POOLING])
        except ValueError:  # not ours to repair: carried as the source had it
            pooling = None
        if isinstance(pooling, dict):
            pooling["word_embedding_dimension"] = sizes["hidden"]
            files[POOLING] = (json.dumps(pooling, indent=2) + "\n").encode()
    if library == "transformers" and config.get("model_type") in ("vit", "deit", "dinov2"):
        if PROCESSOR in files:
            files[PROCESSOR] = _resized_processor(files[PROCESSOR], config)
        elif (processor := image_processor(config)) is not None:
            files[PROCESSOR] = processor
            generated.append(PROCESSOR)
    return files, generated


def module_folders(files: dict[str, bytes]) -> list[str]:
    """Folders sentence-transformers' ``modules.json`` names; modules without files (Normalize) still need one."""
    try:
        modules = json.loads(files.get("modules.json", b"[]"))
    except ValueError:
        return []
    return sorted({m["path"] for m in modules if isinstance(m, dict) and isinstance(m.get("path"), str)
                   and m["path"] and "/" not in m["path"] and not m["path"].startswith(".")})


def image_processor(config: dict[str, Any]) -> bytes | None:
    """A ``preprocessor_config.json`` for a transformers ViT, DeiT or Dinov2 target whose source had none.

    Dinov2 follows its hub checkpoints (resize 256, crop 224, ImageNet statistics; the model interpolates its
    positions); ViT and DeiT resize to the model's image size, with ImageNet statistics for DeiT and 0.5 for ViT,
    as their hub checkpoints do."""
    if int(config.get("num_channels", 3)) != 3:
        return None
    size = config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    common = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True}
    if config.get("model_type") == "dinov2":
        data = {"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
                "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, **common}
    else:
        imagenet = config.get("model_type") == "deit"
        data = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                "size": {"height": height, "width": width}, "resample": 2,
                "image_mean": IMAGENET_MEAN if imagenet else [0.5] * 3,
                "image_std": IMAGENET_STD if imagenet else [0.5] * 3, **common}
    return (json.dumps(data, indent=2) + "\n").encode()


def _resized_processor(data: bytes, config: dict[str, Any]) -> bytes:
    """The source's processor; a fixed ``size`` follows the target's image size (Dinov2 crops: unchanged)."""
    try:
        processor = json.loads(data)
    except ValueError:
        return data
    if not isinstance(processor, dict):
        return data
    size = config.get("image_size")
    if config.get("model_type") != "dinov2" and isinstance(size, int) and isinstance(processor.get("size"), dict) \
            and {"height", "width"} <= set(processor["size"]):
        processor["size"] = {"height": size, "width": size}
        if isinstance(processor.get("crop_size"), dict):
            processor["crop_size"] = {"height": size, "width": size}
    return (json.dumps(processor, indent=2) + "\n").encode()


__all__ = ["carried", "image_processor", "module_folders", "source_info"]
