"""Staged writes: a big learngene is stored gene by gene while it is still being extracted, then published at once.

Writing a learngene in one transaction means writing all of it after the extraction (the transaction must not hold
the registry's write lock for minutes). Staging overlaps the two instead: the learngene row is created under a
hidden name (``~staging-<uuid>``, which no valid name can be), each gene is written in a short transaction of its
own as soon as it exists, and ``publish`` renames the row and fills in what only the end knows (the source's hash)
in one small transaction. Readers see the whole learngene or none of it.

If the process dies, the hidden rows stay behind, invisible; the next staging removes those that have not been
written to for ``STALE_AFTER_S`` (each gene written refreshes its row), and a failed or interrupted add removes its
own at once.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import RegistryError
from .entities import GeneRecord, LearngeneInfo
from .models import SqlAsset, SqlGene, SqlLearngene

if TYPE_CHECKING:
    from .store import Registry

STAGING_PREFIX = "~staging-"  # learngene names start with a letter or digit: a staged row can never collide
STALE_AFTER_S = 6 * 3600  # a staged learngene nobody wrote to for this long belongs to a process that died


def is_staged(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


def visible(query: Any) -> Any:
    """``query`` over learngenes without the staged ones."""
    return query.where(~SqlLearngene.name.startswith(STAGING_PREFIX, autoescape=True))


class StagedLearngene:
    """A learngene being written; see the module docstring. Made by :meth:`Registry.staging`."""

    def __init__(self, registry: Registry, info: LearngeneInfo):
        from .store import _duplicate, now

        self.registry = registry
        self.info = info
        self.published = False
        self.genes = 0
        hidden = STAGING_PREFIX + uuid.uuid4().hex

        def work(session: Session) -> int:
            if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                raise _duplicate(info.name)  # before the extraction, not after it
            row = SqlLearngene(**learngene_columns(replace(info, name=hidden, created_at=now())))
            session.add(row)
            session.flush()
            return row.id

        self.id = registry._run(work, write=True, what=f"cannot add learngene '{info.name}'")
        self._crash("stage:learngene-row")

    def put(self, record: GeneRecord) -> None:
        """Write one gene, in a transaction of its own (SQLite: straight from the tensors' memory into the blob)."""
        self.put_encoded(*gene_parts(record))

    def put_encoded(self, columns: dict[str, Any], parts: list[memoryview]) -> None:
        """Write one gene already encoded (``columns`` and ``parts`` as :func:`gene_parts` makes them; an import
        passes the exported bytes as they are, so the gene keeps its sha256)."""
        from .store import now

        def work(session: Session) -> None:
            heartbeat = session.execute(update(SqlLearngene).where(SqlLearngene.id == self.id).values(
                created_at=now()))
            if heartbeat.rowcount != 1:
                raise RegistryError(f"learngene '{self.info.name}' was being written, but its staged rows are gone "
                                    f"(removed as abandoned by another process after {STALE_AFTER_S // 3600} h?)")
            insert_gene(session, self.id, columns, parts)

        self.registry._run(work, write=True, what=f"cannot add learngene '{self.info.name}'")
        self._crash(f"stage:gene-{self.genes}")
        self.genes += 1

    def publish(self, info: LearngeneInfo, assets: dict[str, bytes] | None = None) -> None:
        """Make the learngene visible under ``info`` (its final name and fields), with its assets: one transaction."""
        from .store import _duplicate, sha256

        self._crash("stage:genes-written")

        def work(session: Session) -> None:
            if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                raise _duplicate(info.name)  # a concurrent add of the same name finished first
            parent_id = self.registry._row(session, info.parent).id if info.parent else None
            done = session.execute(update(SqlLearngene).where(SqlLearngene.id == self.id).values(
                parent_id=parent_id, **learngene_columns(info)))
            if done.rowcount != 1:
                raise RegistryError(f"learngene '{info.name}' was written, but its staged rows are gone (removed as "
                                    f"abandoned by another process?); add it again")
            for filename, data in (assets or {}).items():
                session.add(SqlAsset(learngene_id=self.id, filename=filename, sha256=sha256(data), data=data))
            session.flush()
            self._crash("publish:before-commit")

        try:
            self.registry._run(work, write=True, what=f"cannot add learngene '{info.name}'")
        except IntegrityError as exc:
            raise _duplicate(info.name) from exc
        self.published = True
        self._crash("publish:after-commit")

    def discard(self) -> None:
        def work(session: Session) -> None:
            _delete(session, [self.id])

        self.registry._run(work, write=True, what=f"cannot clean up the unfinished learngene '{self.info.name}'")

    @staticmethod
    def _crash(point: str) -> None:
        from .store import crash_point

        crash_point(point)


@contextmanager
def staging(registry: Registry, info: LearngeneInfo, stale_after_s: float = STALE_AFTER_S
            ) -> Iterator[StagedLearngene]:
    """A :class:`StagedLearngene` for ``info``; removed again unless it was published (an error, Ctrl-C)."""
    drop_abandoned(registry, stale_after_s, what=f"cannot add learngene '{info.name}'")
    staged = StagedLearngene(registry, info)
    try:
        yield staged
    except BaseException:
        try:
            staged.discard()
        except Exception:  # the registry itself failed: report the first error, the rows stay hidden
            pass
        raise
    if not staged.published:
        staged.discard()


def drop_abandoned(registry: Registry, stale_after_s: float = STALE_AFTER_S,
                   what: str = "cannot remove abandoned staged learngenes") -> int:
    """Remove staged learngenes nobody has written to for ``stale_after_s`` seconds; how many were removed. Looks
    first without the write lock: usually there is nothing to remove."""
    from .store import now

    def stale(session: Session) -> list[int]:
        cutoff = now() - timedelta(seconds=stale_after_s)
        return list(session.scalars(select(SqlLearngene.id).where(
            SqlLearngene.name.startswith(STAGING_PREFIX, autoescape=True), SqlLearngene.created_at <= cutoff)))

    def work(session: Session) -> int:
        ids = stale(session)
        _delete(session, ids)
        return len(ids)

    if not registry._run(stale, what=what):
        return 0
    return registry._run(work, write=True, what=what)


def _delete(session: Session, ids: list[int]) -> None:
    if ids:  # plain DELETEs: the ORM cascade would first load every gene's bytes into memory
        for table in (SqlGene, SqlAsset):
            session.execute(delete(table).where(table.learngene_id.in_(ids)))
        session.execute(delete(SqlLearngene).where(SqlLearngene.id.in_(ids)))


def learngene_columns(info: LearngeneInfo) -> dict[str, Any]:
    """A learngene row's columns from ``info`` (all but ``parent_id``, which needs a lookup)."""
    import json

    return dict(
        name=info.name, family=info.family, source=info.source, source_sha256=info.source_sha256,
        source_config=json.dumps(info.source_config, sort_keys=True), transform=info.transform,
        transform_params=json.dumps(info.transform_params, sort_keys=True), keep=json.dumps(info.keep, sort_keys=True),
        dtype=info.dtype, zoo_version=info.zoo_version, created_at=info.created_at, notes=info.notes,
        refinement=json.dumps(info.refinement, sort_keys=True) if info.refinement is not None else None,
        calibration=info.calibration,
    )


def insert_gene(session: Session, learngene_id: int, columns: dict[str, Any], parts: list[memoryview]) -> None:
    """One gene row (``columns`` and ``parts`` from :func:`gene_parts`). SQLite (Python 3.11+) takes the bytes in
    place, written piece by piece into a blob of the right size: no gene-sized bytes object, and about a third less
    time for a big gene. The row is dropped from the session once written, so memory holds one gene."""
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
    safetensors header, then the coefficients, means and stds (what :func:`zoo.registry.store.decode_gene` reads)."""
    import json

    import torch

    from ..safetensors_io import header, raw_bytes

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
