"""Turn what the user typed (a folder, a file, a hub id or a short alias) into a local checkpoint.

Only safe formats are read: safetensors, or ``torch.load(weights_only=True)`` for legacy ``.bin`` files. Remote
code is never executed: configs are read as JSON and models are built from zoo's own adapters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SourceNotFoundError
from .hf.safetensors_io import SafetensorsReader, load_file

if TYPE_CHECKING:
    import torch

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
ASSET_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "generation_config.json",
    "chat_template.jinja",  # transformers >= 4.50 saves the chat template beside the tokenizer config
    "chat_template.json",
    "preprocessor_config.json",  # AutoImageProcessor / pipeline for vision models
    # sentence-transformers: the modules, and the pooling layer (zoo.outputs fits its width to the target)
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
# stored with a learngene, never copied into a folder: what the source declares about itself (its license),
# read from its model card's front matter or its GGUF metadata, for the materialized model's card (zoo.card)
SOURCE_INFO = "zoo-source.json"
HEX64 = re.compile(r"[0-9a-f]{64}")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
LOCAL_HINT = "pass a local folder instead, e.g. `zoo learngene add ./my-model` (a folder with config.json and *.safetensors)"


def write_assets(assets: Mapping[str, bytes], folder: Path) -> None:
    """A checkpoint's small files written into ``folder`` as a model folder has them (sentence-transformers keeps
    some in subfolders, ``1_Pooling/config.json``); names that would leave the folder are skipped."""
    root = Path(folder).resolve()
    for filename, data in assets.items():
        path = (root / filename).resolve()
        if root not in path.parents:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@dataclass
class Checkpoint:
    """A model on local disk: its config (``model_type`` picks the adapter) and weight files.

    Source plugins whose weights are not safetensors or ``.bin`` files (GGUF, ONNX, ...) pass ``loader``, a
    function returning the state dict in the keys their adapter expects.
    """

    ref: str  # what the user typed
    root: Path
    config: dict[str, Any]
    weight_files: list[Path]
    hub_id: str | None = None
    assets: dict[str, bytes] = field(default_factory=dict)
    loader: Callable[[], dict[str, torch.Tensor]] | None = None
    default_name: str | None = None  # learngene name stem when neither a hub id nor the folder gives a good one

    def state_dict(self) -> dict[str, torch.Tensor]:
        import torch

        if self.loader is not None:
            return self.loader()
        state: dict[str, torch.Tensor] = {}
        for path in self.weight_files:
            if path.suffix == ".safetensors":
                state.update(load_file(str(path)))
            else:
                state.update(torch.load(path, map_location="cpu", weights_only=True))
        return state

    def tensors(self) -> Mapping[str, torch.Tensor]:
        """The weights as a mapping that reads each tensor when asked (safetensors), else the full state dict."""
        if self.loader is None and self.weight_files and all(p.suffix == ".safetensors" for p in self.weight_files):
            return SafetensorsReader(self.weight_files)
        return self.state_dict()

    def sha256(self) -> str:
        """The sha256 of the weight files, concatenated in order (of the one file, for most checkpoints)."""
        if len(self.weight_files) == 1 and (known := _hub_blob_sha256(self.weight_files[0])):
            return known
        digest = hashlib.sha256()
        block = bytearray(1 << 22)
        view = memoryview(block)
        for path in self.weight_files:
            with open(path, "rb", buffering=0) as fh:  # into one reused buffer: no new bytes object per read
                while size := fh.readinto(block):
                    digest.update(view[:size])
        return digest.hexdigest()


def _hub_blob_sha256(path: Path) -> str | None:
    """A file in a Hugging Face cache is a link to ``blobs/<sha256 of its content>`` (LFS files, which weights
    always are; git files have 40-digit names): the hash is known without reading gigabytes again."""
    blob = path.resolve()
    if blob.parent.name == "blobs" and HEX64.fullmatch(blob.name):
        return blob.name
    return None


def _weights_in(folder: Path) -> list[Path]:
    for pattern in WEIGHT_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


def _read_config(folder: Path, ref: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise SourceNotFoundError(f"'{ref}' has no config.json next to its weights; zoo needs a Hugging Face model folder")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceNotFoundError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise SourceNotFoundError(f"{path} has no 'model_type'; is it a transformers config?")
    return config


def _read_assets(folder: Path) -> dict[str, bytes]:
    assets = {name: (folder / name).read_bytes() for name in ASSET_FILES if (folder / name).is_file()}
    info = {k: v for k, v in card_metadata(folder / "README.md").items() if k in ("license", "license_name")}
    return {**assets, **source_info_asset(info)}


def source_info_asset(info: dict[str, Any]) -> dict[str, bytes]:
    """The :data:`SOURCE_INFO` asset for ``info`` (nothing when it is empty)."""
    info = {k: v for k, v in info.items() if v}
    return {SOURCE_INFO: json.dumps(info, sort_keys=True).encode()} if info else {}


def card_metadata(readme: Path) -> dict[str, Any]:
    """The flat ``key: value`` pairs of a model card's YAML front matter (license, library_name, ...).

    Only top-level scalars are read, without a YAML library: a card that is not front matter gives ``{}``."""
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")[:20000]
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    out: dict[str, Any] = {}
    for line in text[3:end if end > 0 else 0].splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key[0].isspace() and re.fullmatch(r"[\w-]+", key) and value.strip():
            out[key] = value.strip().strip("'\"")
    return out


def from_local(path: Path, ref: str) -> Checkpoint:
    if path.is_dir():
        weights = _weights_in(path)
        if not weights:
            raise SourceNotFoundError(f"folder '{ref}' holds no *.safetensors or pytorch_model*.bin weights")
        return Checkpoint(ref, path, _read_config(path, ref), weights, assets=_read_assets(path))
    if path.suffix == ".safetensors" or path.name.endswith(".bin"):
        # a file names the model by its stem (loose/minilm.safetensors -> minilm), unless the stem is generic
        stem = path.name.removesuffix(".safetensors").removesuffix(".bin")
        named = None if stem in ("model", "pytorch_model") or stem.startswith(("model-", "pytorch_model-")) else stem
        return Checkpoint(ref, path.parent, _read_config(path.parent, ref), [path], assets=_read_assets(path.parent),
                          default_name=named)
    raise SourceNotFoundError(f"'{ref}' is not a model folder or a .safetensors file")


def from_hub(repo_id: str, ref: str) -> Checkpoint:
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "README.md", *WEIGHT_PATTERNS, *ASSET_FILES]  # README.md: the license
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        try:
            folder = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as exc:
            raise SourceNotFoundError(
                f"'{ref}' is not a local path, and '{repo_id}' could not be downloaded: {_hub_reason(exc)}; {LOCAL_HINT}"
            ) from None
    checkpoint = from_local(Path(folder), ref)
    checkpoint.hub_id = repo_id
    return checkpoint


def _hub_reason(exc: BaseException) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, RepositoryNotFoundError):
        return "no such repository on the Hugging Face Hub (or it is private)"
    if isinstance(exc, LocalEntryNotFoundError) or "connect" in str(exc).lower():
        return "the Hugging Face Hub is unreachable (no network?) and the model is not in the local cache"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def resolve(source: str, aliases: dict[str, str], known_aliases: Iterable[str] = ()) -> Checkpoint:
    """Find ``source`` locally, then as an alias, then on the Hugging Face Hub."""
    path = Path(source).expanduser()
    if path.exists():
        return from_local(path, source)
    repo_id = aliases.get(source, source.removeprefix("hf-hub:"))
    if not HUB_ID.match(repo_id):
        raise SourceNotFoundError(
            f"'{source}' is neither an existing path nor a hub id; known aliases: {', '.join(sorted(known_aliases)) or '(none)'}"
        )
    return from_hub(repo_id, source)
