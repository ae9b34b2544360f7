"""The one source resolver, shared by the API, the CLI, ``zoo refine`` and the benchmarks: what ``zoo learngene add
SOURCE`` reads (a plugin's ``resolve_source`` hook first, then zoo's own: local folders and files, the adapters'
source aliases, Hugging Face Hub ids), the adapter that reads it, what a learngene records of it, and its weights
read with a damaged file reported in one line."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UnknownNameError, ZooError
from .plugin_host import Catalog, catalog, pm
from .sources import Checkpoint, resolve

if TYPE_CHECKING:
    import torch


def source_aliases(cat: Catalog | None = None) -> dict[str, str]:
    """The short source names every adapter answers to (``bert-base``) -> the hub id each stands for."""
    cat = catalog() if cat is None else cat
    return {a: hub for e in cat.architectures.values() for a, hub in getattr(e.obj, "source_aliases", {}).items()}


def resolve_checkpoint(source: str) -> Checkpoint:
    """``source`` as ``zoo learngene add`` reads it: what the first plugin's ``resolve_source`` hook answers (a GGUF
    file, a timm model name, an ONNX file), else zoo's resolver (a local folder or file, an adapter's source alias,
    a Hugging Face Hub id)."""
    checkpoint = pm.hook.resolve_source(source=source)
    if checkpoint is None:
        aliases = source_aliases()
        checkpoint = resolve(source, aliases, aliases)
    return checkpoint


def find_adapter(config: dict[str, Any]) -> Any:
    cat = catalog()
    model_type = config.get("model_type")
    for entry in cat.architectures.values():
        if model_type in getattr(entry.obj, "model_types", ()):
            return entry.obj
    supported = [t for e in cat.architectures.values() for t in getattr(e.obj, "model_types", ())]
    raise UnknownNameError("model type", str(model_type), supported, hint="install a zoo plugin for it")


def default_learngene_name(checkpoint: Any, transform: str) -> str:
    """``<model>.<transform>``, the model named by its hub id, its folder or the source plugin's default."""
    if getattr(checkpoint, "default_name", None):
        base = checkpoint.default_name
    elif checkpoint.hub_id:
        base = checkpoint.hub_id.rsplit("/", 1)[-1]
    else:
        folder = checkpoint.root
        base = folder.parent.name if folder.name in ("model", "models", "weights", "checkpoint") else folder.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._").lower() or "model"
    return f"{base}.{transform}"


def describe_source(source: str) -> str:
    """How a learngene records where it came from: an absolute path for local files, else what the user typed."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def read_weights(checkpoint: Any, source: str) -> Mapping[str, torch.Tensor]:
    """The checkpoint's tensors (read lazily where the format allows); a file that is damaged, or a pickle that
    ``weights_only`` refuses, is one line."""
    try:
        return checkpoint.tensors() if hasattr(checkpoint, "tensors") else checkpoint.state_dict()
    except ZooError:
        raise
    except Exception as exc:
        raise unreadable(source, exc) from exc


def reading(source: str, records: Iterator[Any]) -> Iterator[Any]:
    """``records``, with a damaged file found while streaming reported like one found up front."""
    try:
        yield from records
    except (ValueError, OSError) as exc:
        raise unreadable(source, exc) from exc


def unreadable(source: str, exc: BaseException) -> ZooError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ZooError(f"cannot read the weights of '{source}' (zoo loads only safetensors, GGUF and plain-tensor "
                    f"torch files, never pickled code): {type(exc).__name__}: {reason}")
