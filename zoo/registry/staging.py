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

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import RegistryError
from ..genes import GeneRecord
from .codec import gene_parts, insert_gene, learngene_columns
from .entities import LearngeneInfo
from .models import STAGING_PREFIX, SqlAsset, SqlGene, SqlLearngene, learngene_row
from .sharing import hand_over, share_published
from .util import crash_point, duplicate_name, now, sha256

if TYPE_CHECKING:
    from .store import Registry

STALE_AFTER_S = 6 * 3600  # a staged learngene nobody wrote to for this long belongs to a process that died


class StagedLearngene:
    """A learngene being written; see the module docstring. Made by :meth:`Registry.staging`."""

    def __init__(self, registry: Registry, info: LearngeneInfo):
        self.registry = registry
        self.info = info
        self.published = False
        self.genes = 0
        hidden = STAGING_PREFIX + uuid.uuid4().hex

        def work(session: Session) -> int:
            if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                raise duplicate_name(info.name)  # before the extraction, not after it
            row = SqlLearngene(**learngene_columns(replace(info, name=hidden, created_at=now())))
            session.add(row)
            session.flush()
            return row.id

        self.id = registry.run(work, write=True, what=f"cannot add learngene '{info.name}'")
        crash_point("stage:learngene-row")

    def put(self, record: GeneRecord) -> None:
        """Write one gene, in a transaction of its own (SQLite: straight from the tensors' memory into the blob)."""
        self.put_encoded(*gene_parts(record))

    def put_encoded(self, columns: dict[str, Any], parts: list[memoryview]) -> None:
        """Write one gene already encoded (``columns`` and ``parts`` as :func:`gene_parts` makes them; an import
        passes the exported bytes as they are, so the gene keeps its sha256)."""

        def work(session: Session) -> None:
            heartbeat = session.execute(update(SqlLearngene).where(SqlLearngene.id == self.id).values(
                created_at=now()))
            if heartbeat.rowcount != 1:
                raise RegistryError(f"learngene '{self.info.name}' was being written, but its staged rows are gone "
                                    f"(removed as abandoned by another process after {STALE_AFTER_S // 3600} h?)")
            insert_gene(session, self.id, columns, parts)

        self.registry.run(work, write=True, what=f"cannot add learngene '{self.info.name}'")
        crash_point(f"stage:gene-{self.genes}")
        self.genes += 1

    def publish(self, info: LearngeneInfo, assets: dict[str, bytes] | None = None) -> None:
        """Make the learngene visible under ``info`` (its final name and fields), with its assets: one transaction."""
        crash_point("stage:genes-written")

        def work(session: Session) -> None:
            if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                raise duplicate_name(info.name)  # a concurrent add of the same name finished first
            parent_id = learngene_row(session, info.parent).id if info.parent else None
            done = session.execute(update(SqlLearngene).where(SqlLearngene.id == self.id).values(
                parent_id=parent_id, **learngene_columns(info)))
            if done.rowcount != 1:
                raise RegistryError(f"learngene '{info.name}' was written, but its staged rows are gone (removed as "
                                    f"abandoned by another process?); add it again")
            for filename, data in (assets or {}).items():
                session.add(SqlAsset(learngene_id=self.id, filename=filename, sha256=sha256(data), data=data))
            session.flush()
            share_published(session, self.id)  # what a concurrent add of the same genes stored meanwhile
            crash_point("publish:before-commit")

        try:
            self.registry.run(work, write=True, what=f"cannot add learngene '{info.name}'")
        except IntegrityError as exc:
            raise duplicate_name(info.name) from exc
        self.published = True
        crash_point("publish:after-commit")

    def discard(self) -> None:
        def work(session: Session) -> None:
            _delete(session, [self.id])

        self.registry.run(work, write=True, what=f"cannot clean up the unfinished learngene '{self.info.name}'")


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
    def stale(session: Session) -> list[int]:
        cutoff = now() - timedelta(seconds=stale_after_s)
        return list(session.scalars(select(SqlLearngene.id).where(
            SqlLearngene.name.startswith(STAGING_PREFIX, autoescape=True), SqlLearngene.created_at <= cutoff)))

    def work(session: Session) -> int:
        ids = stale(session)
        _delete(session, ids)
        return len(ids)

    if not registry.run(stale, what=what):
        return 0
    return registry.run(work, write=True, what=what)


def _delete(session: Session, ids: list[int]) -> None:
    if ids:  # plain DELETEs: the ORM cascade would first load every gene's bytes into memory
        hand_over(session, ids)  # a removal of a shared owner may have made a staged row an heir
        for table in (SqlGene, SqlAsset):
            session.execute(delete(table).where(table.learngene_id.in_(ids)))
        session.execute(delete(SqlLearngene).where(SqlLearngene.id.in_(ids)))
