"""``zoo verify``: check a whole registry and report every problem it finds. Nothing is ever repaired.

Checks, in order: the schema revision; for SQLite ``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check``;
then every learngene's metadata (JSON fields parse), every gene (bytes match the recorded size and sha256, parse as
safetensors with coeffs/mean/std, and the stored shape and dtype match the recorded ones; a gene that shares another
row's bytes must point at a row that holds them, with the same sha256 and size, and those bytes are checked), every
asset's sha256, and that no gene belongs to a learngene that does not exist. Reads use plain SQL over the columns
every schema revision has, so an old or damaged registry can be checked too, one gene at a time (bounded memory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from .codec import decode_gene
from .models import is_staged
from .store import Registry
from .util import reason, sha256

MAX_INTEGRITY_LINES = 20


@dataclass
class VerifyReport:
    registry: str
    learngenes: int = 0
    staged: int = 0  # learngenes being written (or left by an add that died): not checked, not problems
    genes: int = 0
    assets: int = 0
    nbytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"registry": self.registry, "ok": self.ok, "learngenes": self.learngenes, "staged": self.staged,
                "genes": self.genes, "assets": self.assets, "nbytes": self.nbytes, "problems": self.problems}


def verify(reg: Registry, names: Iterable[str] = ()) -> VerifyReport:
    """Check ``reg`` (only the learngenes in ``names``, if given; the database-wide checks always run)."""
    report = VerifyReport(reg.where)
    try:
        current, head = reg.schema_revision()
    except Exception as exc:  # cannot even read the schema version: nothing else will work
        report.problems.append(str(exc))
        return report
    if current != head:
        report.problems.append(f"schema is at {current}, this zoo's is {head} (`zoo db upgrade`, or upgrade zoo)")
    wanted = set(names)
    try:
        with reg.engine.connect() as conn:
            if reg.is_sqlite:
                _sqlite_checks(conn, report)
            rows = conn.execute(text("SELECT id, name, source_config, transform_params, keep FROM learngenes "
                                     "ORDER BY id")).all()
            shared = "data_of" in {c["name"] for c in inspect(conn).get_columns("genes")}  # schema 0005 on
            unknown = wanted - {r.name for r in rows}
            report.problems += [f"no learngene named '{n}'" for n in sorted(unknown)]
            for row in rows:
                if is_staged(row.name):  # being written by an add, or abandoned by one that died (docs/registry.md)
                    report.staged += 1
                    continue
                if wanted and row.name not in wanted:
                    continue
                report.learngenes += 1
                _check_learngene(conn, row, report, shared)
            if not wanted:
                _check_orphans(conn, report)
    except SQLAlchemyError as exc:
        report.problems.append(f"cannot read the registry: {reason(exc)}")
    return report


def _sqlite_checks(conn: Connection, report: VerifyReport) -> None:
    try:
        lines = [r[0] for r in conn.exec_driver_sql("PRAGMA integrity_check").all()]
    except SQLAlchemyError as exc:
        report.problems.append(f"SQLite integrity check failed: {reason(exc)}")
        conn.rollback()
        return
    if lines != ["ok"]:
        shown = lines[:MAX_INTEGRITY_LINES]
        more = f" (and {len(lines) - len(shown)} more)" if len(lines) > len(shown) else ""
        report.problems.append(f"SQLite integrity check: {'; '.join(shown)}{more}")
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        report.problems.append(f"{len(broken)} rows point at rows that do not exist (foreign key check)")


def _check_learngene(conn: Connection, row: Any, report: VerifyReport, shared: bool) -> None:
    name = row.name
    for column in ("source_config", "transform_params", "keep"):
        try:
            json.loads(getattr(row, column))
        except (TypeError, ValueError):
            report.problems.append(f"learngene '{name}': {column} is not valid JSON")
    try:
        genes = conn.execute(text(f"SELECT id, name, shape, dtype, nbytes, sha256{', data_of' if shared else ''} "
                                  f"FROM genes WHERE learngene_id = :id ORDER BY id"), {"id": row.id}).all()
    except SQLAlchemyError as exc:
        report.problems.append(f"learngene '{name}': cannot list its genes: {reason(exc)}")
        conn.rollback()
        return
    if not genes:
        report.problems.append(f"learngene '{name}' has no genes")
    for gene in genes:
        report.genes += 1
        holder = gene.data_of if shared and gene.data_of is not None else gene.id
        try:
            if holder != gene.id:
                problem = _reference_problem(conn, name, gene)
                if problem:
                    report.problems.append(problem)
                    continue
            data = conn.execute(text("SELECT data FROM genes WHERE id = :id"), {"id": holder}).scalar_one()
        except SQLAlchemyError as exc:
            report.problems.append(f"learngene '{name}' gene '{gene.name}' cannot be read: {reason(exc)}")
            conn.rollback()
            continue
        data = bytes(data)
        report.nbytes += len(data)
        if len(data) != gene.nbytes:
            report.problems.append(f"learngene '{name}' gene '{gene.name}' has {len(data)} bytes, "
                                   f"{gene.nbytes} recorded")
            continue
        try:
            coeffs = decode_gene(data, gene.sha256, name, gene.name)["coeffs"]
        except Exception as exc:
            report.problems.append(str(exc))
            continue
        stored = (list(coeffs.shape), str(coeffs.dtype).removeprefix("torch."))
        if stored != (json.loads(gene.shape), gene.dtype):
            report.problems.append(f"learngene '{name}' gene '{gene.name}' holds {stored[1]}{stored[0]}, "
                                   f"recorded {gene.dtype}{json.loads(gene.shape)}")
    try:
        assets = conn.execute(text("SELECT filename, sha256, data FROM assets WHERE learngene_id = :id"),
                              {"id": row.id}).all()
    except SQLAlchemyError as exc:
        report.problems.append(f"learngene '{name}': cannot read its assets: {reason(exc)}")
        conn.rollback()
        return
    for asset in assets:
        report.assets += 1
        if sha256(bytes(asset.data)) != asset.sha256:
            report.problems.append(f"learngene '{name}' asset '{asset.filename}' is damaged (sha256 mismatch)")


def _reference_problem(conn: Connection, name: str, gene: Any) -> str | None:
    """What is wrong with gene row ``gene``'s reference to the row holding its bytes, or None."""
    where = f"learngene '{name}' gene '{gene.name}' shares the bytes of gene row {gene.data_of}"
    owner = conn.execute(text("SELECT sha256, nbytes, data_of FROM genes WHERE id = :id"), {"id": gene.data_of}).first()
    if owner is None:
        return f"{where}, which does not exist"
    if owner.data_of is not None:
        return f"{where}, which holds none itself (it shares those of row {owner.data_of})"
    if (owner.sha256, owner.nbytes) != (gene.sha256, gene.nbytes):
        return f"{where}, which holds other bytes (sha256 {owner.sha256[:12]}..., {owner.nbytes} bytes)"
    own = conn.execute(text("SELECT length(data) FROM genes WHERE id = :id"), {"id": gene.id}).scalar_one()
    if own:
        return f"{where}, but holds {own} bytes of its own too"
    return None


def _check_orphans(conn: Connection, report: VerifyReport) -> None:
    for table in ("genes", "assets"):
        count = conn.execute(text(f"SELECT count(*) FROM {table} WHERE learngene_id NOT IN "
                                  f"(SELECT id FROM learngenes)")).scalar_one()
        if count:
            report.problems.append(f"{count} {table} belong to no learngene (a partial write or deletion)")
