"""The exported folder's names and bounds, and a learngene's content sha256 (its identity across registries)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

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


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(meta: dict[str, Any], genes: list[dict[str, Any]], assets: dict[str, str],
                   calibration: str | None) -> str:
    """The learngene's identity: what materialization uses, not what it is called or when it was made."""
    gene_keys = ("name", "axes", "source_shape", "shape", "dtype", "nbytes", "sha256", "fan_in")
    body = {"meta": {k: meta.get(k) for k in CONTENT_FIELDS},
            "genes": [{k: g[k] for k in gene_keys} for g in genes],
            "assets": dict(sorted(assets.items())), "calibration": calibration}
    return sha256_of(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def stored_content_sha256(reg: Any, name: str) -> str:
    """The content sha256 of learngene ``name`` as ``reg`` stores it."""
    info = reg.get(name)
    genes = list(reg.stored_genes(name))
    assets = {filename: sha256_of(data) for filename, data in reg.assets(name).items()}
    return content_sha256(vars(info), genes, assets, sha256_of(info.calibration) if info.calibration else None)

