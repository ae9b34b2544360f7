"""Conversions between the registry's rows and zoo's entities, both ways, in one place.

Learngene rows <-> :class:`~zoo.registry.entities.LearngeneInfo` (JSON columns), and gene rows <->
:class:`~zoo.genes.GeneRecord`: a gene's bytes are a safetensors file (``coeffs``, ``mean``, ``std``) whose sha256 is
checked whenever it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert
from sqlalchemy.orm import Session

from ..errors import RegistryError
from ..genes import GeneRecord
from ..hf.safetensors_io import header, load, load_buffer, raw_bytes
from .entities import LearngeneInfo
from .models import SqlGene, SqlLearngene
from .sharing import find_owner
from .util import damaged, sha256

if TYPE_CHECKING:
    import torch


def learngene_columns(info: LearngeneInfo) -> dict[str, Any]:
    """A learngene row's columns from ``info`` (all but ``parent_id``, which needs a lookup)."""
    return dict(
        name=info.name, family=info.family, source=info.source, source_sha256=info.source_sha256,
        source_config=json.dumps(info.source_config, sort_keys=True), transform=info.transform,
        transform_params=json.dumps(info.transform_params, sort_keys=True), keep=json.dumps(info.keep, sort_keys=True),
        dtype=info.dtype, zoo_version=info.zoo_version, created_at=info.created_at, notes=info.notes,
        refinement=json.dumps(info.refinement, sort_keys=True) if info.refinement is not None else None,
        calibration=info.calibration,
    )


def learngene_info(row: SqlLearngene, genes: Sequence[Any], parent: str | None, detail: bool = False
                   ) -> LearngeneInfo:
    """``row`` as an entity; ``genes``: its genes' rows (name, axes, source_shape, shape, nbytes, sha256), whose
    count and sizes are summed, and listed with ``detail``."""
    summary = (
        [
            {"name": g.name, "axes": json.loads(g.axes), "source_shape": json.loads(g.source_shape),
             "shape": json.loads(g.shape), "nbytes": g.nbytes, "sha256": g.sha256}
            for g in genes
        ]
        if detail
        else []
    )
    return LearngeneInfo(
        name=row.name, family=row.family, source=row.source, source_sha256=row.source_sha256,
        source_config=json.loads(row.source_config), transform=row.transform,
        transform_params=json.loads(row.transform_params), keep=json.loads(row.keep), dtype=row.dtype,
        zoo_version=row.zoo_version, created_at=row.created_at, parent=parent, notes=row.notes,
        refinement=json.loads(row.refinement) if row.refinement else None,
        calibration=bytes(row.calibration) if row.calibration is not None else None,
        genes=len(genes), nbytes=sum(g.nbytes for g in genes), gene_summary=summary,
    )
def insert_gene(session: Session, learngene_id: int, columns: dict[str, Any], parts: list[memoryview]) -> None:
    """One gene row (``columns`` and ``parts`` from :func:`gene_parts`; ``columns["sha256"]`` must be the hash of
    ``parts``, as gene_parts computes it and an import checks it). Bytes another published learngene stores already
    are not written again: the row refers to them (zoo.registry.sharing).

    SQLite (Python 3.11+) takes the bytes in place, written piece by piece into a blob of the right size: no
    gene-sized bytes object, and about a third less time for a big gene. The row is dropped from the session once
    written, so memory holds one gene."""
    owner = find_owner(session, learngene_id, columns["sha256"], columns["nbytes"])
    if owner is not None:
        session.execute(insert(SqlGene).values(learngene_id=learngene_id, data=b"", data_of=owner, **columns))
        return
    blob_writer = None
    if session.get_bind().dialect.name == "sqlite":
        blob_writer = getattr(session.connection().connection.driver_connection, "blobopen", None)
    data = func.zeroblob(columns["nbytes"]) if blob_writer else b"".join(parts)
    row = SqlGene(learngene_id=learngene_id, data=data, **columns)
    session.add(row)
    session.flush()
    if blob_writer is not None:
        with blob_writer(SqlGene.__tablename__, "data", row.id) as blob:
            for part in parts:
                blob.write(part)
    session.expunge(row)


def gene_parts(record: GeneRecord) -> tuple[dict[str, Any], list[memoryview]]:
    """A gene's table columns (without ``data``) and its stored bytes as views of the tensors' memory: the
    safetensors header, then the coefficients, means and stds (what :func:`decode_gene` reads)."""
    import torch

    tensors = {
        "coeffs": record.coeffs.detach().to("cpu").contiguous(),
        "mean": record.mean.detach().to("cpu", torch.float32).contiguous(),
        "std": record.std.detach().to("cpu", torch.float32).contiguous(),
    }
    head, _ = header({key: (t.dtype, tuple(t.shape)) for key, t in tensors.items()})
    parts = [memoryview(head), *(raw_bytes(t) for t in tensors.values())]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    coeffs = tensors["coeffs"]
    columns = dict(
        name=record.name, axes=json.dumps(list(record.axes)), source_shape=json.dumps(list(record.source_shape)),
        shape=json.dumps(list(coeffs.shape)), dtype=str(coeffs.dtype).removeprefix("torch."),
        nbytes=sum(len(p) for p in parts), sha256=digest.hexdigest(), fan_in=record.fan_in,
    )
    return columns, parts


BLOB_CHUNK = 8 * 2**20  # read a SQLite blob in pieces this big: each is hashed while it is still in cache


def read_blob(session: Session, row_id: int) -> tuple[bytearray, str]:
    """SQLite only: the ``data`` of gene row ``row_id`` and its sha256, computed while reading.

    One pass over the bytes instead of three (fetch, hash, decode copy), with the GIL released while SQLite reads;
    the buffer is writable, so :func:`decode_gene` can hand out its tensors without copying it."""
    opener = session.connection().connection.driver_connection.blobopen
    digest = hashlib.sha256()
    with opener(SqlGene.__tablename__, "data", row_id, readonly=True) as blob:
        buffer = bytearray(len(blob))
        view = memoryview(buffer)
        done = 0
        while done < len(buffer):
            chunk = blob.read(BLOB_CHUNK)
            if not chunk:  # pragma: no cover - a blob cannot shrink inside the reading transaction
                raise RegistryError(f"gene row {row_id} ended while it was being read")
            view[done:done + len(chunk)] = chunk
            digest.update(chunk)
            done += len(chunk)
    return buffer, digest.hexdigest()


def decode_gene(data: bytes | bytearray, expected_sha256: str, name: str, gene: str,
                digest: str | None = None) -> dict[str, torch.Tensor]:
    """A stored gene's tensors, after checking its bytes against the recorded sha256 (``digest``: theirs, when the
    reader hashed them already). A writable ``bytearray`` is not copied: the tensors are views of it."""
    if (sha256(data) if digest is None else digest) != expected_sha256:
        raise RegistryError(damaged(name, f"gene '{gene}'"))
    try:
        tensors = load_buffer(data) if isinstance(data, bytearray) else load(data)
    except Exception as exc:  # the right hash but unreadable: written that way, not damaged in storage
        raise RegistryError(f"learngene '{name}' gene '{gene}' is not valid safetensors ({exc})") from None
    missing = {"coeffs", "mean", "std"} - set(tensors)
    if missing:
        raise RegistryError(f"learngene '{name}' gene '{gene}' lacks tensors {sorted(missing)}")
    return tensors


def gene_record(gene: SqlGene, data: bytes | bytearray, learngene: str, device: Any = "cpu",
                digest: str | None = None) -> GeneRecord:
    """A gene row of learngene ``learngene`` and its stored bytes as a record, its tensors checked and moved to
    ``device`` (``digest``: the bytes' sha256, when the reader hashed them already)."""
    tensors = decode_gene(data, gene.sha256, learngene, gene.name, digest)
    return GeneRecord(
        name=gene.name, axes=tuple(json.loads(gene.axes)), source_shape=tuple(json.loads(gene.source_shape)),
        coeffs=tensors["coeffs"].to(device), mean=tensors["mean"].to(device), std=tensors["std"].to(device),
        fan_in=gene.fan_in,
    )
