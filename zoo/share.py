"""Sharing one learngene: ``zoo learngene export`` writes it as a folder, ``import`` (or ``add``) reads one back.

The folder is a Hugging Face Hub repository as it is (``hf upload ORG/NAME FOLDER .``)::

    README.md                 model card: what it is, how to use it (YAML front matter: library_name zoo)
    manifest.json             {"format": "zoo-learngene", "files": {path: {sha256, size}}}: every other part
    learngene.json            metadata, lineage, the gene table, assets, the content sha256
    genes/<gene>.safetensors  each gene's bytes exactly as the registry stores them (coeffs, mean, std)
    assets/<file>             tokenizer files and the like
    calibration.safetensors   importance scores, when the learngene was calibrated

A gene file is the registry's own bytes, so its sha256 is the gene's sha256 in every registry it passes through.
A learngene's *content sha256* covers everything but its name, creation time, zoo version and parent link; an
import of content already stored under that name is a no-op.

An artifact is untrusted input. Only JSON and safetensors are read (never pickle); every file an import stores is
named in the manifest under a plain relative path, must resolve inside the artifact (or, for a Hub snapshot, the
cache's blob folder), and must have its declared size and sha256; each safetensors header is parsed and checked
against the declared shapes and dtypes within fixed bounds, before the registry is opened for writing. A refused
artifact leaves the registry as it was, to the byte. The README is never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ArtifactError, DuplicateNameError, InvalidConfigError, SourceNotFoundError, UnknownNameError

FORMAT = "zoo-learngene"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "learngene.json"
README = "README.md"
CALIBRATION = "calibration.safetensors"

# Bounds on what an artifact may declare: far above any real learngene, low enough that a hostile one cannot
# make zoo allocate or loop without limit.
MAX_JSON_BYTES = 16 * 2**20
MAX_GENE_BYTES = 2**30  # PostgreSQL's field limit
MAX_ASSET_BYTES = 256 * 2**20
MAX_GENES = 10_000
MAX_ASSETS = 100
MAX_NDIM = 8
MAX_SAFETENSORS_HEADER = 100 * 2**20
PART = re.compile(r"^(genes|assets)/[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
ROLE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ORG_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GENE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
CONTENT_FIELDS = ("family", "source", "source_sha256", "source_config", "transform", "transform_params", "keep",
                  "dtype", "notes", "refinement")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(meta: dict[str, Any], genes: list[dict[str, Any]], assets: dict[str, str],
                   calibration: str | None) -> str:
    """The learngene's identity: what materialization uses, not what it is called or when it was made."""
    gene_keys = ("name", "axes", "source_shape", "shape", "dtype", "nbytes", "sha256", "fan_in")
    body = {"meta": {k: meta.get(k) for k in CONTENT_FIELDS},
            "genes": [{k: g[k] for k in gene_keys} for g in genes],
            "assets": dict(sorted(assets.items())), "calibration": calibration}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def stored_content_sha256(reg: Any, name: str) -> str:
    """The content sha256 of learngene ``name`` as ``reg`` stores it."""
    info = reg.get(name)
    genes = list(reg.stored_genes(name))
    assets = {filename: _sha256(data) for filename, data in reg.assets(name).items()}
    return content_sha256(vars(info), genes, assets, _sha256(info.calibration) if info.calibration else None)


# -- export ----------------------------------------------------------------------------------------------------------
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
    from .api import registry_session

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
            files[rel] = {"sha256": _sha256(data), "size": len(data)}

        genes, used = [], set()
        for index, gene in enumerate(reg.stored_genes(name, data=True)):  # one gene in memory at a time
            stem = gene["name"] if SAFE_NAME.match(gene["name"]) else f"{index:04d}"
            if stem.lower() in used:  # case-insensitive file systems: two names must not meet in one file
                stem = f"{index:04d}-{stem}"
            used.add(stem.lower())
            rel = f"genes/{stem}.safetensors"
            write(rel, gene.pop("data"))
            genes.append({**gene, "file": rel})
        assets = []
        for filename, data in sorted(reg.assets(name).items()):
            if not SAFE_NAME.match(filename):
                raise InvalidConfigError(f"learngene '{name}' has an asset named {filename!r}, which cannot be a "
                                         f"file name in an artifact")
            write(f"assets/{filename}", data)
            assets.append({"filename": filename, "file": f"assets/{filename}", "sha256": _sha256(data),
                           "nbytes": len(data)})
        calibration = None
        if info.calibration:
            write(CALIBRATION, info.calibration)
            calibration = {"file": CALIBRATION, "sha256": _sha256(info.calibration), "nbytes": len(info.calibration)}
        digest = content_sha256(vars(info), genes, {a["filename"]: a["sha256"] for a in assets},
                                calibration and calibration["sha256"])
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
    if ORG_REPO.match(meta["source"]) and not meta["source"].startswith("/"):
        front.append(f"base_model: {json.dumps(meta['source'])}")
    front.append("---")
    nbytes = sum(g["nbytes"] for g in meta["genes"])
    keep = ", ".join(f"{k}={v:g}" for k, v in sorted(meta["keep"].items()))
    lines = [
        *front, "", f"# {name}", "",
        f"A **learngene** for [zoo](https://pypi.org/project/zoo-learngenes/): the low-frequency part of the weights "
        f"of `{meta['source']}`, from which zoo builds a `{meta['family']}` model of any size (layers, width, heads) "
        f"in seconds, without training, as a folder `transformers` loads.", "",
        "| | |", "|---|---|",
        f"| family | `{meta['family']}` |", f"| source | `{meta['source']}` |",
        f"| transform | `{meta['transform']}` {json.dumps(meta['transform_params']) if meta['transform_params'] else ''} |",
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


# -- reading an artifact -----------------------------------------------------------------------------------------
@dataclass
class Part:
    rel: str
    sha256: str
    size: int


@dataclass
class Artifact:
    """A checked artifact: every part's size, sha256 and structure verified (see the module docstring)."""

    folder: Path
    roots: list[Path]
    meta: dict[str, Any]
    genes: list[dict[str, Any]]
    assets: list[dict[str, Any]]
    calibration: dict[str, Any] | None
    content_sha256: str
    ref: str = ""
    parts: dict[str, Part] = field(default_factory=dict)

    def read(self, rel: str, limit: int) -> bytes:
        """A part's bytes, checked (again) against the manifest: what is stored is what was verified."""
        return _read_part(self, rel, limit)


def _bad(ref: str, reason: str) -> ArtifactError:
    reason = " ".join(str(reason).split())  # one line, whatever a hostile name holds
    return ArtifactError(f"cannot import {ref}: {reason}; nothing was imported")


def is_artifact(folder: Path) -> bool:
    """Whether ``folder`` holds an exported learngene (a manifest of zoo's format)."""
    path = folder / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return False
        return json.loads(path.read_bytes()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _roots(folder: Path) -> list[Path]:
    """Where an artifact's files may really be: inside it, or for a Hub cache snapshot
    (``models--org--name/snapshots/<rev>``, whose files link to ``../../blobs``) that repository's blobs."""
    real = folder.resolve()
    roots = [real]
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--"):
        roots.append(real.parent.parent / "blobs")
    return roots


def _read_part(art: Artifact, rel: str, limit: int) -> bytes:
    ref = art.ref or str(art.folder)
    part = art.parts.get(rel)
    if part is None:
        raise _bad(ref, f"{rel!r} is not listed in {MANIFEST}")
    if part.size > limit:
        raise _bad(ref, f"{rel} declares {part.size} bytes, more than the {limit} allowed")
    path = art.folder / rel
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _bad(ref, f"{rel} is missing") from None
    if not any(real.is_relative_to(root) for root in art.roots):
        raise _bad(ref, f"{rel} points outside the artifact (to {real})")
    if not real.is_file():
        raise _bad(ref, f"{rel} is not a regular file")
    with open(real, "rb") as fh:
        data = fh.read(part.size + 1)
    if len(data) != part.size:
        raise _bad(ref, f"{rel} has {len(data) if len(data) <= part.size else 'more than ' + str(part.size)} bytes, "
                        f"the manifest says {part.size}")
    if _sha256(data) != part.sha256:
        raise _bad(ref, f"{rel} does not match its sha256 in {MANIFEST} (damaged or altered)")
    return data


def _json(ref: str, data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _bad(ref, f"{what} is not valid JSON ({type(exc).__name__})") from None


def _want(ref: str, value: Any, kind: type | tuple[type, ...], what: str, none: bool = False) -> Any:
    if value is None and none:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, (int, float)):
        raise _bad(ref, f"{what} must be {getattr(kind, '__name__', 'a number')}, not {type(value).__name__}")
    return value


def _text(ref: str, value: Any, what: str, max_len: int, pattern: re.Pattern[str] | None = None,
          none: bool = False) -> str | None:
    value = _want(ref, value, str, what, none)
    if value is None:
        return None
    if len(value) > max_len or (pattern is not None and not pattern.match(value)) or "\x00" in value:
        raise _bad(ref, f"{what} {value[:80]!r} is not allowed here")
    return value


def _ints(ref: str, value: Any, what: str, minimum: int) -> list[int]:
    _want(ref, value, list, what)
    if len(value) > MAX_NDIM or not all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v < 2**40
                                        for v in value):
        raise _bad(ref, f"{what} must be at most {MAX_NDIM} integers >= {minimum}")
    return value


def read_artifact(folder: Path, ref: str | None = None) -> Artifact:
    """Check the artifact in ``folder`` completely (nothing is written anywhere) and return what it holds."""
    ref = ref or str(folder)
    art = Artifact(folder, _roots(folder), {}, [], [], None, "", ref=ref)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise _bad(ref, f"no {MANIFEST}: not a learngene exported by `zoo learngene export`")
    if manifest_path.stat().st_size > MAX_JSON_BYTES:
        raise _bad(ref, f"{MANIFEST} is larger than {MAX_JSON_BYTES} bytes")
    real = manifest_path.resolve()
    if not any(real.is_relative_to(root) for root in art.roots):
        raise _bad(ref, f"{MANIFEST} points outside the artifact")
    manifest = _json(ref, real.read_bytes(), MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _bad(ref, f"{MANIFEST} is not a zoo learngene manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _bad(ref, f"it is format version {version!r}, this zoo reads version {FORMAT_VERSION}: upgrade zoo "
                        f"(pip install -U zoo-learngenes)")
    files = _want(ref, manifest.get("files"), dict, f"{MANIFEST} 'files'")
    if len(files) > MAX_GENES + MAX_ASSETS + 3:
        raise _bad(ref, f"{MANIFEST} lists {len(files)} files, more than any learngene has")
    folded: set[str] = set()
    for rel, entry in files.items():
        if rel not in (METADATA, README, CALIBRATION) and not PART.match(rel):
            raise _bad(ref, f"{MANIFEST} names the file {rel[:80]!r}: only {METADATA}, {CALIBRATION}, genes/NAME "
                            f"and assets/NAME are allowed (no other folders, no '..')")
        if rel.lower() in folded:  # two names one file on a case-insensitive file system
            raise _bad(ref, f"{MANIFEST} names {rel!r} twice (ignoring case)")
        folded.add(rel.lower())
        _want(ref, entry, dict, f"{MANIFEST} entry for {rel}")
        digest = _text(ref, entry.get("sha256"), f"the sha256 of {rel}", 64, HEX64)
        size = _want(ref, entry.get("size"), int, f"the size of {rel}")
        if size < 0:
            raise _bad(ref, f"the size of {rel} is negative")
        art.parts[rel] = Part(rel, digest, size)
    if METADATA not in art.parts:
        raise _bad(ref, f"{MANIFEST} does not list {METADATA}")
    meta = _json(ref, art.read(METADATA, MAX_JSON_BYTES), METADATA)
    _want(ref, meta, dict, METADATA)
    art.meta = _check_meta(ref, meta)
    used = {METADATA, README}

    def claim(rel: Any, what: str) -> str:
        rel = _text(ref, rel, f"the file of {what}", 260)
        if rel not in art.parts:
            raise _bad(ref, f"{what} is in {rel!r}, which {MANIFEST} does not list")
        if rel in used:
            raise _bad(ref, f"{what} shares the file {rel} with another part")
        used.add(rel)
        return rel

    genes = _want(ref, meta.get("genes"), list, "'genes'")
    if not genes or len(genes) > MAX_GENES:
        raise _bad(ref, f"it has {len(genes)} genes (1 to {MAX_GENES} allowed)")
    names: set[str] = set()
    for entry in genes:
        gene = _check_gene(ref, _want(ref, entry, dict, "a gene entry"))
        if gene["name"] in names:
            raise _bad(ref, f"two genes are named {gene['name']!r}")
        names.add(gene["name"])
        gene["file"] = claim(entry.get("file"), f"gene {gene['name']!r}")
        if art.parts[gene["file"]].size != gene["nbytes"] or art.parts[gene["file"]].sha256 != gene["sha256"]:
            raise _bad(ref, f"gene {gene['name']!r}: its size or sha256 differs from the manifest's")
        _check_gene_bytes(ref, gene, art.read(gene["file"], MAX_GENE_BYTES))
        art.genes.append(gene)
    assets = _want(ref, meta.get("assets"), list, "'assets'")
    if len(assets) > MAX_ASSETS:
        raise _bad(ref, f"it has {len(assets)} assets, more than {MAX_ASSETS}")
    filenames: set[str] = set()
    for entry in assets:
        _want(ref, entry, dict, "an asset entry")
        filename = _text(ref, entry.get("filename"), "an asset file name", 200, SAFE_NAME)
        if filename.lower() in filenames:
            raise _bad(ref, f"two assets are named {filename!r} (ignoring case)")
        filenames.add(filename.lower())
        rel = claim(entry.get("file"), f"asset {filename!r}")
        if _text(ref, entry.get("sha256"), f"the sha256 of asset {filename}", 64, HEX64) != art.parts[rel].sha256:
            raise _bad(ref, f"asset {filename!r}: its sha256 differs from the manifest's")
        art.read(rel, MAX_ASSET_BYTES)
        art.assets.append({"filename": filename, "file": rel, "sha256": art.parts[rel].sha256})
    calibration = meta.get("calibration")
    if calibration is not None:
        _want(ref, calibration, dict, "'calibration'")
        rel = claim(calibration.get("file"), "the calibration")
        if calibration.get("sha256") != art.parts[rel].sha256:
            raise _bad(ref, "the calibration's sha256 differs from the manifest's")
        _check_calibration(ref, art.read(rel, MAX_GENE_BYTES))
        art.calibration = {"file": rel, "sha256": art.parts[rel].sha256}
    art.content_sha256 = content_sha256(art.meta, art.genes, {a["filename"]: a["sha256"] for a in art.assets},
                                        art.calibration and art.calibration["sha256"])
    if meta.get("content_sha256") != art.content_sha256:
        raise _bad(ref, f"its content sha256 ({str(meta.get('content_sha256'))[:16]}...) does not match its "
                        f"contents ({art.content_sha256[:16]}...)")
    return art


def _check_meta(ref: str, meta: dict[str, Any]) -> dict[str, Any]:
    from .api import NAME_PATTERN
    from .pipeline import STORAGE_DTYPES

    out = {
        "name": _text(ref, meta.get("name"), "the learngene name", 128, NAME_PATTERN),
        "family": _text(ref, meta.get("family"), "the family", 100, SAFE_NAME),
        "source": _text(ref, meta.get("source"), "the source", 4096),
        "source_sha256": _text(ref, meta.get("source_sha256"), "the source sha256", 64, re.compile(r"^[0-9a-f]*$")),
        "source_config": _want(ref, meta.get("source_config"), dict, "'source_config'"),
        "transform": _text(ref, meta.get("transform"), "the transform", 100, SAFE_NAME),
        "transform_params": _want(ref, meta.get("transform_params"), dict, "'transform_params'"),
        "keep": _want(ref, meta.get("keep"), dict, "'keep'"),
        "dtype": _text(ref, meta.get("dtype"), "the dtype", 20),
        "zoo_version": _text(ref, meta.get("zoo_version"), "the zoo version", 40),
        "notes": _text(ref, meta.get("notes"), "the notes", 65536, none=True),
        "refinement": _want(ref, meta.get("refinement"), dict, "'refinement'", none=True),
    }
    if out["dtype"] not in STORAGE_DTYPES:
        raise _bad(ref, f"dtype {out['dtype']!r} is not one of {', '.join(STORAGE_DTYPES)}")
    for role, ratio in out["keep"].items():
        if not (role == "*" or ROLE.match(role)) or isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not math.isfinite(ratio):
            raise _bad(ref, f"keep {role[:40]!r}: {ratio!r} is not a role and a ratio")
    try:
        created = datetime.fromisoformat(_text(ref, meta.get("created_at"), "created_at", 40))
    except ValueError:
        raise _bad(ref, "created_at is not an ISO date and time") from None
    if created.tzinfo is not None:  # the registry keeps naive UTC
        created = created.astimezone(timezone.utc).replace(tzinfo=None)
    out["created_at"] = created
    parent = _want(ref, meta.get("parent"), dict, "'parent'", none=True)
    out["parent"] = None if parent is None else {
        "name": _text(ref, parent.get("name"), "the parent's name", 128, NAME_PATTERN),
        "content_sha256": _text(ref, parent.get("content_sha256"), "the parent's content sha256", 64, HEX64)}
    lineage = _want(ref, meta.get("lineage", []), list, "'lineage'")
    out["lineage"] = [_text(ref, n, "a lineage name", 200) for n in lineage[:1000]]
    return out


def _check_gene(ref: str, entry: dict[str, Any]) -> dict[str, Any]:
    name = _text(ref, entry.get("name"), "a gene name", 200, re.compile(r"^[^\x00-\x1f~][^\x00-\x1f]*$"))
    where = f"gene {name!r}"
    axes = _want(ref, entry.get("axes"), list, f"{where} axes")
    if len(axes) > MAX_NDIM or not all(isinstance(a, str) and ROLE.match(a) for a in axes):
        raise _bad(ref, f"{where}: axes must be at most {MAX_NDIM} role names")
    gene = {
        "name": name, "axes": axes,
        "source_shape": _ints(ref, entry.get("source_shape"), f"{where} source_shape", 1),
        "shape": _ints(ref, entry.get("shape"), f"{where} shape", 0),
        "dtype": _text(ref, entry.get("dtype"), f"{where} dtype", 20),
        "nbytes": _want(ref, entry.get("nbytes"), int, f"{where} nbytes"),
        "sha256": _text(ref, entry.get("sha256"), f"{where} sha256", 64, HEX64),
        "fan_in": _want(ref, entry.get("fan_in"), int, f"{where} fan_in"),
    }
    if gene["dtype"] not in GENE_DTYPES:
        raise _bad(ref, f"{where}: dtype {gene['dtype']!r} is not one of {', '.join(GENE_DTYPES)}")
    if not len(gene["shape"]) == len(gene["source_shape"]) == len(axes):
        raise _bad(ref, f"{where}: axes, shape and source_shape differ in length")
    if not 0 <= gene["fan_in"] <= len(axes):
        raise _bad(ref, f"{where}: fan_in {gene['fan_in']} is out of range")
    if not 0 < gene["nbytes"] <= MAX_GENE_BYTES:
        raise _bad(ref, f"{where}: {gene['nbytes']} bytes is out of range (1 to {MAX_GENE_BYTES})")
    return gene


def _safetensors_header(ref: str, data: bytes, what: str) -> dict[str, Any]:
    """The header of safetensors ``data``, checked: float tensors only, bounded shapes, and offsets that tile the
    data exactly (what the format requires; nothing beyond the declared tensors can hide in the file)."""
    if len(data) < 8:
        raise _bad(ref, f"{what} is too short to be safetensors")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_SAFETENSORS_HEADER, len(data) - 8):
        raise _bad(ref, f"{what} declares a {size}-byte header, longer than the file allows")
    header = _json(ref, data[8:8 + size], f"the header of {what}")
    if not isinstance(header, dict):
        raise _bad(ref, f"the header of {what} is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _bad(ref, f"{what}: __metadata__ must map names to strings")
    spans = []
    for key, t in header.items():
        if not isinstance(t, dict) or t.get("dtype") not in ITEM_SIZE:
            raise _bad(ref, f"{what}: tensor {key[:40]!r} is not a float tensor")
        shape = _ints(ref, t.get("shape"), f"{what} tensor {key[:40]!r} shape", 0)
        offsets = t.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise _bad(ref, f"{what}: tensor {key[:40]!r} has no valid data_offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * ITEM_SIZE[t["dtype"]]:
            raise _bad(ref, f"{what}: tensor {key[:40]!r} has {offsets[1] - offsets[0]} bytes for shape {shape}")
        spans.append(tuple(offsets))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise _bad(ref, f"{what}: its tensors overlap or leave gaps")
        end = stop
    if end != len(data) - 8 - size:
        raise _bad(ref, f"{what}: {len(data) - 8 - size} data bytes, its tensors cover {end}")
    return header


def _load(ref: str, data: bytes, what: str) -> dict[str, Any]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:
        raise _bad(ref, f"{what} is not valid safetensors ({type(exc).__name__})") from None


def _check_gene_bytes(ref: str, gene: dict[str, Any], data: bytes) -> None:
    what = f"gene {gene['name']!r}"
    header = _safetensors_header(ref, data, what)
    if set(header) != {"coeffs", "mean", "std"}:
        raise _bad(ref, f"{what} must hold exactly coeffs, mean and std, not {sorted(header)[:5]}")
    coeffs, mean, std = header["coeffs"], header["mean"], header["std"]
    if coeffs["dtype"] != GENE_DTYPES[gene["dtype"]] or coeffs["shape"] != gene["shape"]:
        raise _bad(ref, f"{what} holds {coeffs['dtype']}{coeffs['shape']}, its entry says "
                        f"{gene['dtype']}{gene['shape']}")
    if mean["dtype"] != "F32" or std["dtype"] != "F32" or mean["shape"] != std["shape"] or len(mean["shape"]) > 1:
        raise _bad(ref, f"{what}: mean and std must be float32 scalars or vectors of one shape")
    _load(ref, data, what)


def _check_calibration(ref: str, data: bytes) -> None:
    from .importance import META_KEY

    header = _safetensors_header(ref, data, "the calibration")
    if any(not ROLE.match(k) or len(t["shape"]) > 2 for k, t in header.items()):
        raise _bad(ref, "the calibration must hold per-role score tensors of at most 2 dimensions")
    meta = (_json(ref, data[8:8 + struct.unpack("<Q", data[:8])[0]], "the calibration header")
            .get("__metadata__") or {})
    _json(ref, meta.get(META_KEY, "{}").encode(), "the calibration metadata")
    _load(ref, data, "the calibration")


# -- finding an artifact ---------------------------------------------------------------------------------------------
def artifact_folder(ref: str, probe_hub: bool = True) -> Path | None:
    """The local folder of the exported learngene ``ref`` names (a folder, or ``ORG/REPO`` on the Hub, through the
    Hugging Face cache, so ``HF_HUB_OFFLINE=1`` works), or None when ``ref`` is not one."""
    path = Path(ref).expanduser()
    if path.exists():
        return path if path.is_dir() and is_artifact(path) else None
    if not probe_hub or not ORG_REPO.match(ref.removeprefix("hf-hub:")):
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
        files = list(json.loads((folder / MANIFEST).read_bytes()).get("files", {}))
    except (OSError, ValueError, AttributeError, RecursionError):
        return folder  # read_artifact reports it
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


# -- import ----------------------------------------------------------------------------------------------------------
@dataclass
class Imported:
    info: Any  # LearngeneInfo as stored
    imported: bool  # False: the same content was already there under this name
    content_sha256: str
    parent_linked: bool = False


def import_learngene(ref: str, registry: Any = None, name: str | None = None, link_parent: bool = True) -> Imported:
    """Import the exported learngene at ``ref`` (a folder or ``ORG/REPO``) into ``registry``; see the module
    docstring. ``name``: store it under another name. ``link_parent=False``: import a refined learngene whose parent
    this registry lacks, without the link."""
    from .api import check_name, registry_session
    from .registry import LearngeneInfo

    folder = artifact_folder(ref)
    if folder is None:
        path = Path(ref).expanduser()
        if path.exists():
            raise _bad(ref, f"it has no {MANIFEST} of a learngene exported by `zoo learngene export`")
        raise SourceNotFoundError(f"'{ref}' is neither a folder nor an exported learngene on the Hugging Face Hub "
                                  f"(or in its local cache); give the folder `zoo learngene export` wrote, or ORG/REPO")
    art = read_artifact(folder, ref)  # everything checked before the registry is opened
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
    hint = (f"import the parent first (its exported folder or repository), or pass --no-parent to import it "
            f"without the link")
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
