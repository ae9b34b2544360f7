"""The registry store: one managed session per operation, atomic writes, schema checks.

Where it lives: ``--registry`` (a path or SQLAlchemy URL), else ``$ZOO_REGISTRY``, else ``registry.db`` in the
user's data directory. A new default registry starts as a copy of the bundled ``registry.db.example``, so zoo works
offline from a fresh clone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DuplicateNameError, RegistryError, UnknownNameError
from .entities import GeneRecord, LearngeneInfo
from .models import SqlAsset, SqlGene, SqlLearngene

EXAMPLE_NAME = "registry.db.example"
MIGRATIONS = Path(__file__).parent / "migrations"


def default_registry_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("zoo", appauthor=False)) / "registry.db"


def example_registry_path() -> Path | None:
    env = os.environ.get("ZOO_EXAMPLE_REGISTRY")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / EXAMPLE_NAME)  # source checkout / editable install
    return next((p for p in candidates if p.is_file()), None)


def to_url(location: str | os.PathLike[str]) -> str:
    text = os.fspath(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching to WAL itself needs the lock (codebase-memory-mcp #116)
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    """A learngene registry at a SQLAlchemy URL. Use :func:`open_registry` to get one."""

    def __init__(self, url: str, create: bool = True, check_schema: bool = True):
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            db = parsed.database
            if not db or db == ":memory:":
                raise RegistryError("in-memory registries are not supported; give a file path")
            path = Path(db)
            if not path.exists() and not create:
                raise RegistryError(
                    f"registry {path} does not exist; check --registry / $ZOO_REGISTRY, or create it with "
                    f"`zoo learngene add SOURCE --registry {path}`"
                )
            if path.exists() and path.is_dir():
                raise RegistryError(f"registry path {path} is a directory; give a file such as {path / 'registry.db'}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"cannot create the registry folder {path.parent}: {exc}") from exc
            self.path: Path | None = path
        else:
            self.path = None
        try:
            self.engine = create_engine(url, future=True)
        except (SQLAlchemyError, ImportError) as exc:
            raise RegistryError(f"cannot use registry URL '{url}': {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _set_sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if check_schema:
            self._check_schema()

    # -- schema --------------------------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = _alembic_config(self.engine)
        script = ScriptDirectory.from_config(cfg)
        head = script.get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                tables = set(inspect(conn).get_table_names())
        except SQLAlchemyError as exc:
            raise RegistryError(f"cannot open registry {self.where}: {_reason(exc)}") from exc
        if current is None:
            if tables:
                raise RegistryError(f"{self.where} is not a zoo registry (it has tables {sorted(tables)})")
            command.upgrade(cfg, "head")
            return
        if current == head:
            return
        known = {rev.revision for rev in script.walk_revisions()}
        if current in known:
            raise RegistryError(
                f"registry {self.where} is at schema {current}, this zoo needs {head}; back it up, then run "
                f"`zoo db upgrade --registry {self.where}`"
            )
        raise RegistryError(
            f"registry {self.where} was written by a newer zoo (schema {current}); upgrade zoo: pip install -U zoo"
        )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upgrade(self) -> None:
        from alembic import command

        command.upgrade(_alembic_config(self.engine), "head")

    @property
    def where(self) -> str:
        return str(self.path) if self.path else self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError:
            session.rollback()
            raise
        except OperationalError as exc:
            session.rollback()
            raise RegistryError(f"registry {self.where}: {_reason(exc)}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # -- reads -----------------------------------------------------------------------------------------------------
    def _row(self, session: Session, name: str) -> SqlLearngene:
        row = session.scalar(select(SqlLearngene).where(SqlLearngene.name == name))
        if row is None:
            names = session.scalars(select(SqlLearngene.name)).all()
            raise UnknownNameError("learngene", name, names, hint="see `zoo learngene list`")
        return row

    def _info(self, session: Session, row: SqlLearngene, detail: bool = False) -> LearngeneInfo:
        genes = session.execute(
            select(SqlGene.name, SqlGene.axes, SqlGene.source_shape, SqlGene.shape, SqlGene.nbytes, SqlGene.sha256)
            .where(SqlGene.learngene_id == row.id)
            .order_by(SqlGene.id)
        ).all()
        parent = session.get(SqlLearngene, row.parent_id).name if row.parent_id else None
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
            genes=len(genes), nbytes=sum(g.nbytes for g in genes), gene_summary=summary,
        )

    def list(self, family: str | None = None) -> list[LearngeneInfo]:
        with self.session() as session:
            query = select(SqlLearngene).order_by(SqlLearngene.created_at, SqlLearngene.id)
            if family:
                query = query.where(SqlLearngene.family == family)
            return [self._info(session, row) for row in session.scalars(query)]

    def get(self, name: str, detail: bool = False) -> LearngeneInfo:
        with self.session() as session:
            return self._info(session, self._row(session, name), detail=detail)

    def genes(self, name: str, device: Any = "cpu") -> dict[str, GeneRecord]:
        """Load and verify every gene of a learngene."""
        with self.session() as session:
            row = self._row(session, name)
            out: dict[str, GeneRecord] = {}
            for gene in session.scalars(select(SqlGene).where(SqlGene.learngene_id == row.id).order_by(SqlGene.id)):
                if sha256(gene.data) != gene.sha256:
                    raise RegistryError(
                        f"learngene '{name}' gene '{gene.name}' is damaged (sha256 mismatch); "
                        f"re-add it with `zoo learngene add` after `zoo learngene rm {name}`"
                    )
                tensors = st_load(gene.data)
                out[gene.name] = GeneRecord(
                    name=gene.name, axes=tuple(json.loads(gene.axes)), source_shape=tuple(json.loads(gene.source_shape)),
                    coeffs=tensors["coeffs"].to(device), mean=tensors["mean"].to(device), std=tensors["std"].to(device),
                    fan_in=gene.fan_in,
                )
            return out

    def assets(self, name: str) -> dict[str, bytes]:
        with self.session() as session:
            row = self._row(session, name)
            return {a.filename: a.data for a in row.assets}

    def latest(self, family: str) -> LearngeneInfo | None:
        found = self.list(family=family)
        return found[-1] if found else None

    # -- writes ----------------------------------------------------------------------------------------------------
    def add(self, info: LearngeneInfo, genes: dict[str, GeneRecord], assets: dict[str, bytes] | None = None) -> None:
        """Store a learngene and all its genes in one transaction: all or nothing."""
        rows = [_gene_row(record) for record in genes.values()]  # serialize before touching the database
        try:
            with self.session() as session:
                if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                    raise DuplicateNameError(
                        f"a learngene named '{info.name}' already exists; pick another with --name, or remove it "
                        f"first with `zoo learngene rm {info.name}`"
                    )
                parent_id = self._row(session, info.parent).id if info.parent else None
                row = SqlLearngene(
                    name=info.name, family=info.family, source=info.source, source_sha256=info.source_sha256,
                    source_config=json.dumps(info.source_config, sort_keys=True), transform=info.transform,
                    transform_params=json.dumps(info.transform_params, sort_keys=True),
                    keep=json.dumps(info.keep, sort_keys=True), dtype=info.dtype, zoo_version=info.zoo_version,
                    created_at=info.created_at, parent_id=parent_id, notes=info.notes,
                )
                row.genes = rows
                row.assets = [SqlAsset(filename=k, sha256=sha256(v), data=v) for k, v in (assets or {}).items()]
                session.add(row)
        except IntegrityError as exc:  # a concurrent add of the same name won the race
            raise DuplicateNameError(f"a learngene named '{info.name}' already exists") from exc

    def remove(self, name: str) -> None:
        with self.session() as session:
            session.delete(self._row(session, name))


def _gene_row(record: GeneRecord) -> SqlGene:
    coeffs = record.coeffs.detach().to("cpu").contiguous()
    data = st_save({
        "coeffs": coeffs,
        "mean": record.mean.detach().to("cpu", torch.float32).contiguous(),
        "std": record.std.detach().to("cpu", torch.float32).contiguous(),
    })
    return SqlGene(
        name=record.name, axes=json.dumps(list(record.axes)), source_shape=json.dumps(list(record.source_shape)),
        shape=json.dumps(list(coeffs.shape)), dtype=str(coeffs.dtype).removeprefix("torch."), nbytes=len(data),
        sha256=sha256(data), data=data, fan_in=record.fan_in,
    )


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0]


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def open_registry(location: str | os.PathLike[str] | None = None, create: bool = True) -> Registry:
    """Open the registry at ``location``, ``$ZOO_REGISTRY`` or the default path.

    An explicitly named registry that does not exist is created only when ``create`` (commands that write); for
    reads it is an error, since it is most likely a typo. The default registry is always created on demand.
    """
    location = location or os.environ.get("ZOO_REGISTRY")
    if location:
        return Registry(to_url(location), create=create)
    path = default_registry_path()
    example = example_registry_path()
    if not path.exists() and example is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # copy then rename, so a concurrent first run never sees a half-copied file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registry-", suffix=".tmp")
        os.close(fd)
        shutil.copyfile(example, tmp)
        os.replace(tmp, path) if not path.exists() else os.unlink(tmp)
    return Registry(to_url(path))
