"""Content-addressed genes: gene bytes that several learngenes hold are stored once.

A gene row either holds its bytes (an *owner*: ``data_of`` is NULL) or refers to the owner that holds them
(``data_of`` is the owner's id, ``data`` is empty). The rules that keep every learngene readable:

- A new gene refers to an owner only in another *published* learngene, and only after that owner's bytes were read
  back and matched their sha256 (so a damaged copy is never shared). A staged learngene (zoo.registry.staging) may
  still be discarded, so nothing new refers to its rows. When it publishes, its genes that another learngene
  stored meanwhile become references (concurrent adds of one checkpoint end up with one copy).
- A new gene refers only to owners in other learngenes, so an add stores its own duplicate genes (a learngene's
  rows may still come to refer to one of its own after a hand-over, below).
- Before gene rows are deleted (``rm``, a discarded staged add), each of their owners that rows outside them refer
  to hands its bytes to the oldest such row (the *heir*, which may be a staged row) and is deleted, and the others
  then refer to the heir; all in the deleting transaction. The ``data_of`` foreign key makes the database refuse a delete that
  would leave a reference dangling.
- References are one hop: an owner is never itself a reference. A publish that turns an heir into a reference
  points the heir's referrers at the new owner too.

SQLite serialises every write transaction (``BEGIN IMMEDIATE``). On PostgreSQL, an owner being referred to is locked
``FOR SHARE`` and the rows being deleted and their heirs ``FOR UPDATE``, so a reference and a hand-over never pass
each other; publishes of genes with the same sha256 queue on an advisory lock so that the later one sees the
earlier one's owners.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from .models import SqlGene, SqlLearngene, visible
from .util import sha256

PG_GENE_LOCK = 0x7A6F67  # first key of the advisory locks on gene sha256s (the second: 28 bits of the sha256)
OWNER = aliased(SqlGene, name="owner")
BYTES = func.coalesce(OWNER.data, SqlGene.data)  # a gene's bytes, wherever they are stored


def with_bytes(query: Any) -> Any:
    """``query`` over genes with each gene's stored bytes as one more column (a reference followed to its owner;
    a reference whose owner is missing reads as its own empty bytes, which fail their sha256 check)."""
    return query.add_columns(BYTES).outerjoin(OWNER, OWNER.id == SqlGene.data_of)


def with_holder(query: Any) -> Any:
    """``query`` over genes with one more column: the id of the row whose ``data`` holds each gene's bytes (its
    owner's for a reference; its own otherwise, also for a reference whose owner is missing, as :func:`with_bytes`
    reads it)."""
    return query.add_columns(func.coalesce(OWNER.id, SqlGene.id)).outerjoin(OWNER, OWNER.id == SqlGene.data_of)


def gene_bytes(session: Session, gene_id: int) -> bytes | None:
    """Gene ``gene_id``'s stored bytes, or None if there is no such gene."""
    row = session.execute(with_bytes(select(SqlGene.id)).where(SqlGene.id == gene_id)).first()
    return None if row is None else bytes(row[1])


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def find_owner(session: Session, learngene_id: int, digest: str, nbytes: int) -> int | None:
    """The owner in another published learngene whose bytes hash to ``digest`` (checked now), or None."""
    candidates = session.scalars(visible(
        select(SqlGene.id).join(SqlLearngene, SqlLearngene.id == SqlGene.learngene_id)
        .where(SqlGene.sha256 == digest, SqlGene.nbytes == nbytes, SqlGene.data_of.is_(None),
               SqlGene.learngene_id != learngene_id)
    ).order_by(SqlGene.id)).all()
    for owner in candidates:
        query = select(SqlGene.data).where(SqlGene.id == owner, SqlGene.data_of.is_(None))
        if _postgres(session):
            query = query.with_for_update(read=True)  # held until commit: a hand-over of it waits for us
        data = session.scalar(query)
        if data is not None and sha256(data) == digest:
            return owner
    return None


def share_published(session: Session, learngene_id: int) -> None:
    """At publish: the learngene's owned genes whose bytes another published learngene owns become references."""
    owned = session.execute(select(SqlGene.id, SqlGene.sha256, SqlGene.nbytes).where(
        SqlGene.learngene_id == learngene_id, SqlGene.data_of.is_(None)).order_by(SqlGene.id)).all()
    if _postgres(session):  # in sorted order: two publishes never wait on each other's locks in a cycle
        for key in sorted({int(g.sha256[:7], 16) for g in owned}):
            session.execute(select(func.pg_advisory_xact_lock(PG_GENE_LOCK, key)))
    for gene in owned:
        owner = find_owner(session, learngene_id, gene.sha256, gene.nbytes)
        if owner is not None:
            session.execute(update(SqlGene).where(SqlGene.id == gene.id).values(data=b"", data_of=owner))
            # a staged row can be an heir (hand_over) that others refer to: they follow, so references stay one hop
            session.execute(update(SqlGene).where(SqlGene.data_of == gene.id).values(data_of=owner))


def hand_over(session: Session, learngene_ids: Sequence[int]) -> int:
    """Before the genes of ``learngene_ids`` are deleted: move the bytes that other rows refer to onto heirs (see
    the module docstring). Returns how many owners handed their bytes over."""
    if not learngene_ids:
        return 0
    leaving = SqlGene.learngene_id.in_(learngene_ids)
    referrer = aliased(SqlGene, name="referrer")
    postgres = _postgres(session)
    if postgres:
        session.execute(select(SqlGene.id).where(leaving).with_for_update()).all()
    owners = session.scalars(select(SqlGene.id).where(leaving, SqlGene.data_of.is_(None), exists().where(
        referrer.data_of == SqlGene.id, referrer.learngene_id.not_in(learngene_ids))).order_by(SqlGene.id)).all()
    handed = 0
    for owner in owners:
        query = select(SqlGene.id).where(SqlGene.data_of == owner, ~leaving).order_by(SqlGene.id)
        heirs = session.scalars(query.with_for_update() if postgres else query).all()
        if not heirs:  # on PostgreSQL, removed meanwhile by another transaction
            continue
        heir, data = heirs[0], session.scalar(select(SqlGene.data).where(SqlGene.id == owner))
        # the owner's row goes before the heir takes its bytes, so SQLite writes them into the pages it frees (the
        # file does not grow by a copy); its referrers among the leaving rows follow too, or the key would refuse
        session.execute(update(SqlGene).where(SqlGene.data_of == owner, SqlGene.id != heir).values(data_of=heir))
        session.execute(update(SqlGene).where(SqlGene.id == heir).values(data_of=None))
        session.execute(delete(SqlGene).where(SqlGene.id == owner))
        session.execute(update(SqlGene).where(SqlGene.id == heir).values(data=data))
        handed += 1
    return handed
