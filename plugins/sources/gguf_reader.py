"""GGUF files as learngene sources (``zoo learngene add model.gguf``, or a folder holding one GGUF and no HF
weights), read through transformers' GGUF loader, which dequantizes them.

Nothing here is Llama-specific: the config transformers reads names the family. The ``llama`` plugin serves these
files through its ``resolve_source`` hook (it has since before this module existed), so ``ZOO_DISABLE_PLUGINS=llama``
still turns GGUF reading off and ``zoo plugins`` lists the hook under ``llama``.
"""

from __future__ import annotations

import tempfile
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidConfigError, SourceNotFoundError
from zoo.sources import WEIGHT_PATTERNS, Checkpoint, source_info_asset

if TYPE_CHECKING:
    import torch


def find_gguf(source: str) -> Path | None:
    """The GGUF file ``source`` names: the file itself, or the one ``*.gguf`` in a folder without HF weights."""
    path = Path(source).expanduser()
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise InvalidConfigError(f"folder '{source}' holds several GGUF files ({', '.join(f.name for f in found)}); "
                                 f"pass one of them")
    return found[0] if found else None


def _load_gguf(folder: Path, filename: str) -> dict[str, torch.Tensor]:
    import torch

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)  # dequantizes
    return dict(model.state_dict())


def _gguf_tokenizer_files(folder: Path, filename: str) -> dict[str, bytes]:
    """The GGUF's tokenizer as HF files, so materialized folders come with a tokenizer."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    except Exception as exc:  # the weights are still usable without one
        warnings.warn(f"no tokenizer read from {filename} ({exc}); materialized models will have none", stacklevel=2)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def gguf_checkpoint(path: Path, ref: str) -> Checkpoint:
    from transformers import AutoConfig

    folder, filename = path.parent, path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=filename).to_dict()
    except (ValueError, KeyError) as exc:  # an architecture transformers cannot read from GGUF
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceNotFoundError(f"transformers cannot read GGUF file '{ref}': {reason}") from None
    config = {k: v for k, v in config.items() if not k.startswith("_")}  # local paths and GGUF names
    assets = {**_gguf_tokenizer_files(folder, filename), **source_info_asset(_gguf_info(path))}
    # named after the file (SmolLM2-135M.Q4_1.gguf -> smollm2-135m.q4_1), not the folder it sits in
    return Checkpoint(ref, folder, config, [path], assets=assets, loader=partial(_load_gguf, folder, filename),
                      default_name=path.stem)


def _gguf_info(path: Path) -> dict[str, Any]:
    """What the GGUF declares about itself (``general.license``) for the materialized model's card."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("general.license")
        return {"license": field.contents()} if field is not None else {}
    except Exception:  # noqa: BLE001 - metadata is a nicety: a file transformers reads must not fail on it
        return {}
