"""ORM tables, and the two queries over them that every part of the registry shares. Rows never leave the
registry: ``codec.py`` converts them to the plain entities in ``entities.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from ..errors import UnknownNameError

# a learngene being written is stored under this prefix (zoo.registry.staging); learngene names start with a letter
# or digit, so a staged row can never collide with one
STAGING_PREFIX = "~staging-"


class Base(DeclarativeBase):
    pass


class SqlLearngene(Base):
    __tablename__ = "learngenes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    family: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    source_config: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    transform: Mapped[str] = mapped_column(String(100), nullable=False)
    transform_params: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    keep: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: role -> ratio
    dtype: Mapped[str] = mapped_column(String(20), nullable=False)
    zoo_version: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("learngenes.id", ondelete="SET NULL"), nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    refinement: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON (added in 0003): see zoo.refine_train
    # safetensors bytes (added in 0004): importance scores from calibration, see zoo.importance
    calibration: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    genes: Mapped[list[SqlGene]] = relationship(back_populates="learngene", cascade="all, delete-orphan")
    assets: Mapped[list[SqlAsset]] = relationship(back_populates="learngene", cascade="all, delete-orphan")


class SqlGene(Base):
    __tablename__ = "genes"
    __table_args__ = (UniqueConstraint("learngene_id", "name", name="uq_gene_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    learngene_id: Mapped[int] = mapped_column(ForeignKey("learngenes.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    axes: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list of roles
    source_shape: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    shape: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: stored coefficient block
    dtype: Mapped[str] = mapped_column(String(20), nullable=False)
    nbytes: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)  # indexed in 0005
    # safetensors: coeffs, mean, std; empty in a reference. Deferred: a row is loaded without its bytes, which are
    # read through zoo.registry.sharing (a reference's are its owner's)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, deferred=True)
    fan_in: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")  # added in 0002
    # added in 0005: the gene row holding this gene's bytes, when another learngene stored them (zoo.registry.sharing)
    data_of: Mapped[int | None] = mapped_column(ForeignKey("genes.id"), nullable=True, index=True)

    learngene: Mapped[SqlLearngene] = relationship(back_populates="genes")


class SqlAsset(Base):
    """Small files that make a materialized folder usable as is (tokenizer, generation config)."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("learngene_id", "filename", name="uq_asset_filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    learngene_id: Mapped[int] = mapped_column(ForeignKey("learngenes.id", ondelete="CASCADE"), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    learngene: Mapped[SqlLearngene] = relationship(back_populates="assets")


def is_staged(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


def visible(query: Any) -> Any:
    """``query`` over learngenes without the staged ones."""
    return query.where(~SqlLearngene.name.startswith(STAGING_PREFIX, autoescape=True))


def learngene_row(session: Session, name: str) -> SqlLearngene:
    """The row of the learngene named ``name``; unknown names list the visible ones."""
    row = session.scalar(select(SqlLearngene).where(SqlLearngene.name == name))
    if row is None:
        names = session.scalars(visible(select(SqlLearngene.name))).all()
        raise UnknownNameError("learngene", name, names, hint="see `zoo learngene list`")
    return row
