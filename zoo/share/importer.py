"""``zoo learngene import`` (and ``add`` of an exported learngene): find the artifact (a folder, or ``ORG/REPO``
through the Hugging Face cache), check it whole (:mod:`zoo.share.check`), then store it like an add: staged gene by
gene, published in one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DuplicateNameError, InvalidConfigError, SourceNotFoundError, UnknownNameError
from ..inputs import check_name, registry_session
from ..registry import LearngeneInfo
from .check import Artifact, is_artifact, read_artifact, refused
from .layout import (CALIBRATION, CONTENT_FIELDS, MANIFEST, MAX_ASSET_BYTES, MAX_GENE_BYTES, METADATA, ORG_REPO,
                     PART, README, stored_content_sha256)

def artifact_folder(ref: str, probe_hub: bool = True) -> Path | None:
    """The local folder of the exported learngene ``ref`` names (a folder, or ``ORG/REPO`` on the Hub, through the
    Hugging Face cache, so ``HF_HUB_OFFLINE=1`` works), or None when ``ref`` is not one."""
    path = Path(ref).expanduser()
    if path.exists():
        return path if path.is_dir() and is_artifact(path) else None
    if not probe_hub or not ORG_REPO.fullmatch(ref.removeprefix("hf-hub:")):
        return None
    repo_id = ref.removeprefix("hf-hub:")
    from huggingface_hub import snapshot_download

    folder = None
    for local_only in (True, False):  # the cache first: offline, and no request when the repository is there
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=[MANIFEST], local_files_only=local_only))
            break
        except Exception:
            continue
    if folder is None or not is_artifact(folder):
        return None
    return _complete(repo_id, folder, ref)


def _complete(repo_id: str, folder: Path, ref: str) -> Path:
    """``folder`` with every file its manifest lists, downloading the missing ones (into the cache)."""
    from huggingface_hub import snapshot_download

    try:
        listed = list(json.loads((folder / MANIFEST).read_bytes()).get("files", {}))
    except (OSError, ValueError, AttributeError, RecursionError):
        return folder  # read_artifact reports it
    # only names an import may read, so a hostile manifest cannot pass glob patterns to the download
    files = [f for f in listed if isinstance(f, str) and (f in (METADATA, README, CALIBRATION) or PART.fullmatch(f))]
    if all((folder / f).exists() for f in files):
        return folder
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=[MANIFEST, *files]))
        missing = [f for f in files if not (folder / f).exists()]
        if missing:  # offline, snapshot_download answers with the cached snapshot as it is
            raise FileNotFoundError(f"{len(missing)} files missing, e.g. {missing[0]} (offline?)")
        return folder
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceNotFoundError(f"'{ref}' is an exported learngene on the Hub, but its files are not all in the "
                                  f"local cache and cannot be downloaded: {reason}") from None


@dataclass
class Imported:
    info: Any  # LearngeneInfo as stored
    imported: bool  # False: the same content was already there under this name
    content_sha256: str
    parent_linked: bool = False


def find_artifact(ref: str) -> Artifact:
    """The exported learngene ``ref`` names (a folder or ``ORG/REPO``), checked whole (``zoo learngene import
    --check`` stops here)."""
    folder = artifact_folder(ref)
    if folder is None:
        if Path(ref).expanduser().exists():
            raise refused(ref, f"it has no {MANIFEST} of a learngene exported by `zoo learngene export`")
        raise SourceNotFoundError(f"'{ref}' is neither a folder nor an exported learngene on the Hugging Face Hub "
                                  f"(or in its local cache); give the folder `zoo learngene export` wrote, or ORG/REPO")
    return read_artifact(folder, ref)


def import_learngene(ref: str, registry: Any = None, name: str | None = None, link_parent: bool = True) -> Imported:
    """Import the exported learngene at ``ref`` (a folder or ``ORG/REPO``) into ``registry``; see the module
    docstring. ``name``: store it under another name. ``link_parent=False``: import a refined learngene whose parent
    this registry lacks, without the link."""

    art = find_artifact(ref)  # everything checked before the registry is opened
    meta = art.meta
    target = check_name(name or meta["name"])
    with registry_session(registry, create=True) as reg:
        try:
            reg.get(target)
            have = stored_content_sha256(reg, target)
        except UnknownNameError:
            have = None
        if have == art.content_sha256:
            return Imported(reg.get(target), False, have)
        if have is not None:
            raise DuplicateNameError(
                f"registry {reg.where} already has a different learngene named '{target}' (content sha256 "
                f"{have[:12]}..., this one {art.content_sha256[:12]}...); import it under another name with --name, "
                f"or remove the other first (`zoo learngene rm {target}`)")
        parent = _parent(reg, meta, ref) if link_parent else None
        info = LearngeneInfo(
            name=target, **{k: meta[k] for k in CONTENT_FIELDS}, zoo_version=meta["zoo_version"],
            created_at=meta["created_at"], parent=parent,
            calibration=art.read(art.calibration["file"], MAX_GENE_BYTES) if art.calibration else None)
        reg.check_writable(f"cannot import learngene '{target}'")
        try:
            _store(reg, art, info)
        except DuplicateNameError:  # a concurrent import of the same name finished first
            if stored_content_sha256(reg, target) == art.content_sha256:
                return Imported(reg.get(target), False, art.content_sha256)
            raise
        return Imported(reg.get(target), True, art.content_sha256, parent is not None)


def _store(reg: Any, art: Artifact, info: Any) -> None:
    """Write the checked artifact gene by gene under a hidden name, then publish it at once (zoo.registry.staging):
    readers see all of it or none, and a failure or Ctrl-C removes what was written."""
    with reg.staging(info) as staged:
        for gene in art.genes:  # one gene in memory at a time, each re-checked as it is read
            data = art.read(gene["file"], MAX_GENE_BYTES)
            columns = {k: gene[k] for k in ("name", "dtype", "nbytes", "sha256", "fan_in")}
            columns.update(axes=json.dumps(gene["axes"]), source_shape=json.dumps(gene["source_shape"]),
                           shape=json.dumps(gene["shape"]))
            staged.put_encoded(columns, [memoryview(data)])
        assets = {a["filename"]: art.read(a["file"], MAX_ASSET_BYTES) for a in art.assets}
        staged.publish(info, assets)


def _parent(reg: Any, meta: dict[str, Any], ref: str) -> str | None:
    parent = meta["parent"]
    if parent is None:
        return None
    hint = ("import the parent first (its exported folder or repository), or pass --no-parent to import it "
            "without the link")
    try:
        have = stored_content_sha256(reg, parent["name"])
    except UnknownNameError:
        raise InvalidConfigError(f"cannot import {ref}: it was refined from '{parent['name']}', which registry "
                                 f"{reg.where} lacks; {hint}") from None
    if have != parent["content_sha256"]:
        raise InvalidConfigError(f"cannot import {ref}: its parent '{parent['name']}' differs from the learngene of "
                                 f"that name in registry {reg.where} (content sha256 {have[:12]}..., expected "
                                 f"{parent['content_sha256'][:12]}...); {hint}")
    return parent["name"]

