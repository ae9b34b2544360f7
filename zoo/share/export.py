"""``zoo learngene export``: one learngene as a folder that is a Hugging Face Hub repository as it is."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidConfigError
from ..inputs import registry_session
from .layout import (CALIBRATION, CONTENT_FIELDS, FORMAT, FORMAT_VERSION, MANIFEST, METADATA, ORG_REPO,
                     README, SAFE_NAME, content_sha256, sha256_of, stored_content_sha256)

@dataclass
class Exported:
    name: str
    path: Path
    genes: int
    nbytes: int
    content_sha256: str


def export_learngene(name: str, out: str | os.PathLike[str], registry: Any = None) -> Exported:
    """Write learngene ``name`` as a folder at ``out`` (new, or an empty folder), atomically: the folder is written
    beside ``out`` and renamed into place, so a failed export leaves nothing. ``registry``: a :class:`Registry`,
    a path or URL, or None for the default. Reading only: a registry on read-only storage exports too."""

    with registry_session(registry) as reg:
        return _export(reg, name, out)


def _export(reg: Any, name: str, out: str | os.PathLike[str]) -> Exported:
    info = reg.get(name)
    out_dir = Path(out).expanduser()
    if out_dir.is_symlink() or (out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir()))):
        raise InvalidConfigError(f"{out_dir} already exists and is not an empty folder; choose a new path")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        files: dict[str, dict[str, Any]] = {}

        def write(rel: str, data: bytes) -> None:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
            files[rel] = {"sha256": sha256_of(data), "size": len(data)}

        genes, used = [], set()
        for index, gene in enumerate(reg.stored_genes(name, data=True)):  # one gene in memory at a time
            stem = gene["name"] if SAFE_NAME.fullmatch(gene["name"]) else f"{index:04d}"
            if stem.lower() in used:  # case-insensitive file systems: two names must not meet in one file
                stem = f"{index:04d}-{stem}"
            used.add(stem.lower())
            rel = f"genes/{stem}.safetensors"
            write(rel, gene.pop("data"))
            genes.append({**gene, "file": rel})
        assets = []
        for filename, data in sorted(reg.assets(name).items()):
            if not SAFE_NAME.fullmatch(filename):
                raise InvalidConfigError(f"learngene '{name}' has an asset named {filename!r}, which cannot be a "
                                         f"file name in an artifact")
            write(f"assets/{filename}", data)
            assets.append({"filename": filename, "file": f"assets/{filename}", "sha256": sha256_of(data),
                           "nbytes": len(data)})
        calibration = None
        if info.calibration:
            write(CALIBRATION, info.calibration)
            calibration = {"file": CALIBRATION, "sha256": sha256_of(info.calibration), "nbytes": len(info.calibration)}
        digest = content_sha256(vars(info), genes, {a["filename"]: a["sha256"] for a in assets},
                                calibration and calibration["sha256"])  # type: ignore[arg-type]
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": info.name,
            **{k: getattr(info, k) for k in CONTENT_FIELDS}, "zoo_version": info.zoo_version,
            "created_at": info.created_at.isoformat(), "content_sha256": digest,
            "parent": ({"name": info.parent, "content_sha256": stored_content_sha256(reg, info.parent)}
                       if info.parent else None),
            "lineage": _lineage(reg, info),
            "genes": genes, "assets": assets, "calibration": calibration,
        }
        write(METADATA, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        write(README, model_card(meta).encode())
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "files": dict(sorted(files.items()))}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); a rename cannot replace it on every platform
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Exported(info.name, out_dir, len(genes), sum(g["nbytes"] for g in genes), digest)


def _lineage(reg: Any, info: Any) -> list[str]:
    """Names of the ancestors, parent first (as the registry knows them; stops at a cycle)."""
    chain, current = [], info
    while current.parent and current.parent not in chain and current.parent != info.name:
        chain.append(current.parent)
        current = reg.get(current.parent)
    return chain


def model_card(meta: dict[str, Any]) -> str:
    """README.md for the Hub: front matter the Hub indexes, then what it is and how to use it."""
    name = meta["name"]
    tags = ["zoo", "learngene", meta["family"], meta["transform"]]
    front = ["---", "library_name: zoo", "tags:", *(f"- {json.dumps(t)}" for t in dict.fromkeys(tags))]
    if ORG_REPO.fullmatch(meta["source"]) and not meta["source"].startswith("/"):
        front.append(f"base_model: {json.dumps(meta['source'])}")
    front.append("---")
    nbytes = sum(g["nbytes"] for g in meta["genes"])
    params = json.dumps(meta["transform_params"]) + " " if meta["transform_params"] else ""
    keep = ", ".join(f"{k}={v:g}" for k, v in sorted(meta["keep"].items()))
    lines = [
        *front, "", f"# {name}", "",
        f"A **learngene** for [zoo](https://pypi.org/project/zoo-learngenes/): the low-frequency part of the weights "
        f"of `{meta['source']}`, from which zoo builds a `{meta['family']}` model of any size (layers, width, heads) "
        f"in seconds, without training, as a folder `transformers` loads.", "",
        "| | |", "|---|---|",
        f"| family | `{meta['family']}` |", f"| source | `{meta['source']}` |",
        f"| transform | `{meta['transform']}` {params}|",
        f"| keep | {keep} |", f"| stored | {len(meta['genes'])} genes, {nbytes / 2**20:.1f} MiB ({meta['dtype']}) |",
        f"| created | {meta['created_at']} (zoo {meta['zoo_version']}) |",
        f"| content sha256 | `{meta['content_sha256']}` |",
    ]
    if meta["lineage"]:
        lines.append(f"| lineage | {' <- '.join(f'`{n}`' for n in [name, *meta['lineage']])} |")
    if meta.get("refinement"):
        r = meta["refinement"]
        lines.append(f"| refined | FRONT+ lambda {r.get('lambda')}, {r.get('steps')} steps of {r.get('task')} |")
    if meta.get("calibration"):
        lines.append("| calibrated | yes (importance scores in `calibration.safetensors`) |")
    lines += [
        "", "## Use it", "", "```bash", "pip install zoo-learngenes",
        "zoo learngene import ORG/REPO        # this repository (or a downloaded copy of it: a folder path)",
        f"zoo materialize --from {name} --layers 4 --out small-model", "```", "",
        f"A learngene refined from a parent needs the parent imported first (`{meta['lineage'][0]}`), or "
        f"`--no-parent`." if meta["lineage"] else "",
        "## Files", "",
        f"`{METADATA}` holds the metadata, lineage and gene table; `genes/*.safetensors` the coefficient blocks (one "
        f"file per gene: `coeffs`, `mean`, `std`); `assets/` the tokenizer files; `{MANIFEST}` the sha256 and size of "
        f"every file, all checked on import. Only JSON and safetensors are ever read.", "",
    ]
    return "\n".join(line for line in lines if line is not None)

