"""Reading an exported learngene, which is untrusted input: every check happens here, before anything is stored.

Only JSON and safetensors are read (never pickle). Every file an import stores is named in the manifest under a
plain relative path, must resolve inside the artifact (or, for a Hub cache snapshot, that repository's blobs), and
must have its declared size and sha256; each safetensors header is parsed and checked against the declared shapes
and dtypes, within the bounds in :mod:`zoo.share.layout`. The README is never read.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, overload

from ..dtypes import STORAGE_DTYPES
from ..errors import ArtifactError
from ..hf.safetensors_io import load
from ..importance import META_KEY
from ..inputs import NAME_PATTERN
from .layout import (CALIBRATION, FORMAT, FORMAT_VERSION, GENE_DTYPES, HEX64, ITEM_SIZE, MANIFEST,
                     MAX_ASSET_BYTES, MAX_ASSETS, MAX_GENE_BYTES, MAX_GENES, MAX_JSON_BYTES, MAX_NDIM,
                     MAX_SAFETENSORS_HEADER, METADATA, PART, README, ROLE, SAFE_NAME, content_sha256, sha256_of)

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


def refused(ref: str, reason: str) -> ArtifactError:
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
        raise refused(ref, f"{rel!r} is not listed in {MANIFEST}")
    if part.size > limit:
        raise refused(ref, f"{rel} declares {part.size} bytes, more than the {limit} allowed")
    path = art.folder / rel
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused(ref, f"{rel} is missing") from None
    if not any(real.is_relative_to(root) for root in art.roots):
        raise refused(ref, f"{rel} points outside the artifact (to {real})")
    if not real.is_file():
        raise refused(ref, f"{rel} is not a regular file")
    with open(real, "rb") as fh:
        data = fh.read(part.size + 1)
    if len(data) != part.size:
        raise refused(ref, f"{rel} has {len(data) if len(data) <= part.size else 'more than ' + str(part.size)} bytes, "
                        f"the manifest says {part.size}")
    if sha256_of(data) != part.sha256:
        raise refused(ref, f"{rel} does not match its sha256 in {MANIFEST} (damaged or altered)")
    return data


def _json(ref: str, data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise refused(ref, f"{what} is not valid JSON ({type(exc).__name__})") from None


def _want(ref: str, value: Any, kind: type | tuple[type, ...], what: str, none: bool = False) -> Any:
    if value is None and none:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, (int, float)):
        raise refused(ref, f"{what} must be {getattr(kind, '__name__', 'a number')}, not {type(value).__name__}")
    return value


@overload
def _text(ref: str, value: Any, what: str, max_len: int, pattern: re.Pattern[str] | None = None,
          none: Literal[False] = False) -> str: ...
@overload
def _text(ref: str, value: Any, what: str, max_len: int, pattern: re.Pattern[str] | None = None,
          none: bool = False) -> str | None: ...
def _text(ref: str, value: Any, what: str, max_len: int, pattern: re.Pattern[str] | None = None,
          none: bool = False) -> str | None:
    value = _want(ref, value, str, what, none)
    if value is None:
        return None
    if len(value) > max_len or (pattern is not None and not pattern.fullmatch(value)) or "\x00" in value:
        raise refused(ref, f"{what} {value[:80]!r} is not allowed here")
    return value


def _ints(ref: str, value: Any, what: str, minimum: int) -> list[int]:
    _want(ref, value, list, what)
    if len(value) > MAX_NDIM or not all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v < 2**40
                                        for v in value):
        raise refused(ref, f"{what} must be at most {MAX_NDIM} integers >= {minimum}")
    return value


def read_artifact(folder: Path, ref: str | None = None) -> Artifact:
    """Check the artifact in ``folder`` completely (nothing is written anywhere) and return what it holds."""
    ref = ref or str(folder)
    art = Artifact(folder, _roots(folder), {}, [], [], None, "", ref=ref)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise refused(ref, f"no {MANIFEST}: not a learngene exported by `zoo learngene export`")
    if manifest_path.stat().st_size > MAX_JSON_BYTES:
        raise refused(ref, f"{MANIFEST} is larger than {MAX_JSON_BYTES} bytes")
    real = manifest_path.resolve()
    if not any(real.is_relative_to(root) for root in art.roots):
        raise refused(ref, f"{MANIFEST} points outside the artifact")
    manifest = _json(ref, real.read_bytes(), MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refused(ref, f"{MANIFEST} is not a zoo learngene manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise refused(ref, f"it is format version {version!r}, this zoo reads version {FORMAT_VERSION}: upgrade zoo "
                        f"(pip install -U zoo-learngenes)")
    files = _want(ref, manifest.get("files"), dict, f"{MANIFEST} 'files'")
    if len(files) > MAX_GENES + MAX_ASSETS + 3:
        raise refused(ref, f"{MANIFEST} lists {len(files)} files, more than any learngene has")
    folded: set[str] = set()
    for rel, entry in files.items():
        if rel not in (METADATA, README, CALIBRATION) and not PART.fullmatch(rel):
            raise refused(ref, f"{MANIFEST} names the file {rel[:80]!r}: only {METADATA}, {CALIBRATION}, genes/NAME "
                            f"and assets/NAME are allowed (no other folders, no '..')")
        if rel.lower() in folded:  # two names one file on a case-insensitive file system
            raise refused(ref, f"{MANIFEST} names {rel!r} twice (ignoring case)")
        folded.add(rel.lower())
        _want(ref, entry, dict, f"{MANIFEST} entry for {rel}")
        digest = _text(ref, entry.get("sha256"), f"the sha256 of {rel}", 64, HEX64)
        size = _want(ref, entry.get("size"), int, f"the size of {rel}")
        if size < 0:
            raise refused(ref, f"the size of {rel} is negative")
        art.parts[rel] = Part(rel, digest, size)
    if METADATA not in art.parts:
        raise refused(ref, f"{MANIFEST} does not list {METADATA}")
    meta = _json(ref, art.read(METADATA, MAX_JSON_BYTES), METADATA)
    _want(ref, meta, dict, METADATA)
    art.meta = _check_meta(ref, meta)
    used = {METADATA, README}

    def claim(rel: Any, what: str) -> str:
        rel = _text(ref, rel, f"the file of {what}", 260)
        if rel not in art.parts:
            raise refused(ref, f"{what} is in {rel!r}, which {MANIFEST} does not list")
        if rel in used:
            raise refused(ref, f"{what} shares the file {rel} with another part")
        used.add(rel)
        return rel

    genes = _want(ref, meta.get("genes"), list, "'genes'")
    if not genes or len(genes) > MAX_GENES:
        raise refused(ref, f"it has {len(genes)} genes (1 to {MAX_GENES} allowed)")
    names: set[str] = set()
    for entry in genes:
        gene = _check_gene(ref, _want(ref, entry, dict, "a gene entry"))
        if gene["name"] in names:
            raise refused(ref, f"two genes are named {gene['name']!r}")
        names.add(gene["name"])
        gene["file"] = claim(entry.get("file"), f"gene {gene['name']!r}")
        if art.parts[gene["file"]].size != gene["nbytes"] or art.parts[gene["file"]].sha256 != gene["sha256"]:
            raise refused(ref, f"gene {gene['name']!r}: its size or sha256 differs from the manifest's")
        _check_gene_bytes(ref, gene, art.read(gene["file"], MAX_GENE_BYTES))
        art.genes.append(gene)
    assets = _want(ref, meta.get("assets"), list, "'assets'")
    if len(assets) > MAX_ASSETS:
        raise refused(ref, f"it has {len(assets)} assets, more than {MAX_ASSETS}")
    filenames: set[str] = set()
    for entry in assets:
        _want(ref, entry, dict, "an asset entry")
        filename = _text(ref, entry.get("filename"), "an asset file name", 200, SAFE_NAME)
        if filename.lower() in filenames:
            raise refused(ref, f"two assets are named {filename!r} (ignoring case)")
        filenames.add(filename.lower())
        rel = claim(entry.get("file"), f"asset {filename!r}")
        if _text(ref, entry.get("sha256"), f"the sha256 of asset {filename}", 64, HEX64) != art.parts[rel].sha256:
            raise refused(ref, f"asset {filename!r}: its sha256 differs from the manifest's")
        art.read(rel, MAX_ASSET_BYTES)
        art.assets.append({"filename": filename, "file": rel, "sha256": art.parts[rel].sha256})
    calibration = meta.get("calibration")
    if calibration is not None:
        _want(ref, calibration, dict, "'calibration'")
        rel = claim(calibration.get("file"), "the calibration")
        if calibration.get("sha256") != art.parts[rel].sha256:
            raise refused(ref, "the calibration's sha256 differs from the manifest's")
        _check_calibration(ref, art.read(rel, MAX_GENE_BYTES))
        art.calibration = {"file": rel, "sha256": art.parts[rel].sha256}
    art.content_sha256 = content_sha256(art.meta, art.genes, {a["filename"]: a["sha256"] for a in art.assets},
                                        art.calibration and art.calibration["sha256"])  # type: ignore[arg-type]
    if meta.get("content_sha256") != art.content_sha256:
        raise refused(ref, f"its content sha256 ({str(meta.get('content_sha256'))[:16]}...) does not match its "
                        f"contents ({art.content_sha256[:16]}...)")
    return art


def _check_meta(ref: str, meta: dict[str, Any]) -> dict[str, Any]:

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
        raise refused(ref, f"dtype {out['dtype']!r} is not one of {', '.join(STORAGE_DTYPES)}")
    for role, ratio in out["keep"].items():
        if not (role == "*" or ROLE.fullmatch(role)) or isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
                or not math.isfinite(ratio):
            raise refused(ref, f"keep {role[:40]!r}: {ratio!r} is not a role and a ratio")
    try:
        created = datetime.fromisoformat(_text(ref, meta.get("created_at"), "created_at", 40))
    except ValueError:
        raise refused(ref, "created_at is not an ISO date and time") from None
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
    if len(axes) > MAX_NDIM or not all(isinstance(a, str) and ROLE.fullmatch(a) for a in axes):
        raise refused(ref, f"{where}: axes must be at most {MAX_NDIM} role names")
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
        raise refused(ref, f"{where}: dtype {gene['dtype']!r} is not one of {', '.join(GENE_DTYPES)}")
    if not len(gene["shape"]) == len(gene["source_shape"]) == len(axes):
        raise refused(ref, f"{where}: axes, shape and source_shape differ in length")
    if not 0 <= gene["fan_in"] <= len(axes):
        raise refused(ref, f"{where}: fan_in {gene['fan_in']} is out of range")
    if not 0 < gene["nbytes"] <= MAX_GENE_BYTES:
        raise refused(ref, f"{where}: {gene['nbytes']} bytes is out of range (1 to {MAX_GENE_BYTES})")
    return gene


def _safetensors_header(ref: str, data: bytes, what: str) -> dict[str, Any]:
    """The header of safetensors ``data``, checked: float tensors only, bounded shapes, and offsets that tile the
    data exactly (what the format requires; nothing beyond the declared tensors can hide in the file)."""
    if len(data) < 8:
        raise refused(ref, f"{what} is too short to be safetensors")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_SAFETENSORS_HEADER, len(data) - 8):
        raise refused(ref, f"{what} declares a {size}-byte header, longer than the file allows")
    header = _json(ref, data[8:8 + size], f"the header of {what}")
    if not isinstance(header, dict):
        raise refused(ref, f"the header of {what} is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise refused(ref, f"{what}: __metadata__ must map names to strings")
    spans = []
    for key, t in header.items():
        if not isinstance(t, dict) or t.get("dtype") not in ITEM_SIZE:
            raise refused(ref, f"{what}: tensor {key[:40]!r} is not a float tensor")
        shape = _ints(ref, t.get("shape"), f"{what} tensor {key[:40]!r} shape", 0)
        offsets = t.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise refused(ref, f"{what}: tensor {key[:40]!r} has no valid data_offsets")
        if offsets[1] - offsets[0] != math.prod(shape) * ITEM_SIZE[t["dtype"]]:
            raise refused(ref, f"{what}: tensor {key[:40]!r} has {offsets[1] - offsets[0]} bytes for shape {shape}")
        spans.append(tuple(offsets))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise refused(ref, f"{what}: its tensors overlap or leave gaps")
        end = stop
    if end != len(data) - 8 - size:
        raise refused(ref, f"{what}: {len(data) - 8 - size} data bytes, its tensors cover {end}")
    return header


def _load(ref: str, data: bytes, what: str) -> dict[str, Any]:
    try:
        return load(data)
    except Exception as exc:
        raise refused(ref, f"{what} is not valid safetensors ({type(exc).__name__})") from None


def _check_gene_bytes(ref: str, gene: dict[str, Any], data: bytes) -> None:
    what = f"gene {gene['name']!r}"
    header = _safetensors_header(ref, data, what)
    if set(header) != {"coeffs", "mean", "std"}:
        raise refused(ref, f"{what} must hold exactly coeffs, mean and std, not {sorted(header)[:5]}")
    coeffs, mean, std = header["coeffs"], header["mean"], header["std"]
    if coeffs["dtype"] != GENE_DTYPES[gene["dtype"]] or coeffs["shape"] != gene["shape"]:
        raise refused(ref, f"{what} holds {coeffs['dtype']}{coeffs['shape']}, its entry says "
                        f"{gene['dtype']}{gene['shape']}")
    if mean["dtype"] != "F32" or std["dtype"] != "F32" or mean["shape"] != std["shape"] or len(mean["shape"]) > 1:
        raise refused(ref, f"{what}: mean and std must be float32 scalars or vectors of one shape")
    _load(ref, data, what)


def _check_calibration(ref: str, data: bytes) -> None:

    header = _safetensors_header(ref, data, "the calibration")
    if any(not ROLE.fullmatch(k) or len(t["shape"]) > 2 for k, t in header.items()):
        raise refused(ref, "the calibration must hold per-role score tensors of at most 2 dimensions")
    meta = (_json(ref, data[8:8 + struct.unpack("<Q", data[:8])[0]], "the calibration header")
            .get("__metadata__") or {})
    _json(ref, meta.get(META_KEY, "{}").encode(), "the calibration metadata")
    _load(ref, data, "the calibration")

