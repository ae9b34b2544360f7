"""A materialized model's folder: refused where writing it could touch anything zoo did not write, written beside
its place and moved in (a crash leaves no half folder), with the source's files fitted to the target, a model card,
and ``zoo.json`` listing what zoo wrote; a user's own README.md and .gitattributes are kept."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import card, outputs
from .errors import InvalidConfigError
from .hf import assemble

if TYPE_CHECKING:
    import torch

    from .registry import Registry

USER_FILES = ("README.md", ".gitattributes")  # a user's own card and Hub repo files: kept when zoo writes the folder


def check_out(out: str | os.PathLike[str], reg: Registry | None = None) -> Path:
    """The ``--out`` folder, refused if writing it could touch anything zoo did not write.

    zoo replaces the whole folder (write beside it, then rename), so it must not be a symlink (the rename would
    replace the link, the removal could follow it), nor hold the registry, nor hold files zoo did not write.
    """
    out_dir = Path(out).expanduser()
    if out_dir.is_symlink():
        raise InvalidConfigError(f"--out {out_dir} is a symbolic link; give the real folder it points to")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidConfigError(f"--out {out_dir} exists and is not a folder")
    if reg is not None and reg.path is not None and reg.path.resolve().is_relative_to(out_dir.resolve()):
        raise InvalidConfigError(f"--out {out_dir} holds the registry {reg.path}; choose another folder")
    if out_dir.is_dir() and not _only_user_files(out_dir) and not zoo_output(out_dir):
        raise InvalidConfigError(f"--out {out_dir} is a non-empty folder that zoo did not write; choose another")
    return out_dir


def _only_user_files(folder: Path) -> bool:
    """Empty, or holding only files a Hub repo starts with (a README.md, .gitattributes), which zoo keeps."""
    return all(p.name in USER_FILES and p.is_file() and not p.is_symlink() for p in folder.iterdir())


def zoo_output(folder: Path) -> bool:
    """A folder zoo wrote: zoo.json, and nothing but the entries it lists or a user's README.md / .gitattributes
    (any other file of the user's keeps the folder from being replaced)."""
    try:
        written = set(json.loads((folder / "zoo.json").read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        return False
    return all((p.name in written | {"zoo.json"} or (p.name in USER_FILES and p.is_file())) and not p.is_symlink()
               for p in folder.iterdir())


def _user_files(folder: Path) -> dict[str, bytes]:
    """The files of the user's in a folder zoo is about to replace: USER_FILES zoo did not write itself (a card
    zoo wrote and the user edited since is the user's)."""
    if not folder.is_dir():
        return {}
    try:
        record = json.loads((folder / "zoo.json").read_text())
    except (OSError, ValueError):
        record = {}
    ours = record.get("written_sha256", {}) if isinstance(record, dict) else {}
    kept = {}
    for name in USER_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if ours.get(name) != hashlib.sha256(data).hexdigest():
                kept[name] = data
    return kept


def save(model: torch.nn.Module, adapter: Any, out_dir: Path, assets: dict[str, bytes], report: dict) -> None:
    """Write the model folder next to a temporary name, then move it in place, so a crash leaves no half folder.

    ``transformers`` models are written tensor by tensor (no serialized copy of the whole state dict in memory);
    other families use their adapter's ``save``."""
    if assemble.streamable(adapter):
        def write(folder: Path) -> None:
            assemble.write_pretrained(model, {}, (), folder)
    else:
        def write(folder: Path) -> None:
            adapter.save(model, folder)
    write_folder(out_dir, write, assets, report)


def _umask() -> int:
    try:  # Linux says it without changing it
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s+([0-7]+)", status, re.M).group(1), 8)  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        mask = os.umask(0o022)  # elsewhere reading the umask means setting it: put it straight back
        os.umask(mask)
        return mask


def write_folder(out_dir: Path, write: Any, assets: dict[str, bytes], report: dict) -> None:
    """Write the folder beside ``out_dir`` and move it in place: the weights (``write``), the source's files
    fitted to the target (zoo.outputs), the model card, then ``zoo.json`` listing what zoo wrote."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the folder is the user's, as mkdir makes it
        write(tmp)
        config = _read_json(tmp / "config.json")
        library = "timm" if str(report.get("load", "")).startswith("timm.") else "transformers"
        files, generated = outputs.carried(assets, config, report.get("family", ""), report.get("sizes", {}), library)
        for relative, data in files.items():  # names from zoo's own list (zoo.outputs), never the registry's
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relative).write_bytes(data)
        for folder in outputs.module_folders(files):
            (tmp / folder).mkdir(exist_ok=True)
        user = _user_files(out_dir)
        report.update(name=out_dir.name, generated_files=generated, kept_user_files=sorted(user))
        written: dict[str, str] = {}
        if "README.md" not in user:
            text = card.render(report, outputs.source_info(assets), sorted(files))
            (tmp / "README.md").write_text(text, encoding="utf-8")
            written["README.md"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        listed = sorted(p.name for p in tmp.iterdir())
        for name, data in user.items():  # the user's card and repo files stay as they were
            (tmp / name).write_bytes(data)
        (tmp / "zoo.json").write_text(json.dumps({**report, "files": listed, "written_sha256": written},
                                                 indent=2, default=str) + "\n")
        if out_dir.exists():
            check_out(out_dir)
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
