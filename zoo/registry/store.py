"""The registry store: one managed transaction per operation, atomic writes, schema checks.

Where it lives: ``--registry`` (a path or SQLAlchemy URL), else ``$ZOO_REGISTRY``, else ``registry.db`` in the
user's data directory. A new default registry starts as a copy of the bundled ``registry.db.example``, so zoo works
offline from a fresh clone. A ``postgresql://`` URL gives a team registry: the same tables, tensors kept in the
database (``bytea``), see docs/registry.md.

Reliability (docs/registry.md): SQLite runs in WAL mode with a busy timeout, write transactions start with
``BEGIN IMMEDIATE`` (so a writer waits for the lock up front instead of failing half-way with "database is
locked"), busy errors are retried, first-time setup and migrations run under a lock and in one transaction, and
every gene and asset carries a sha256 that is checked whenever it is read.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import re
import shutil
import tempfile
import time
from urllib.parse import quote
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, NoReturn, TypeVar

from platformdirs import user_data_dir
from sqlalchemy import create_engine, delete, event, inspect, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import RegistryError
from ..genes import GeneRecord, LazyGeneRecord
from .codec import gene_parts, gene_record, insert_gene, learngene_columns, learngene_info, read_blob
from .entities import LearngeneInfo
from .lock import setup_lock
from .models import SqlAsset, SqlGene, SqlLearngene, learngene_row, visible
from .sharing import gene_bytes, hand_over, share_published, with_bytes, with_holder
from .staging import STALE_AFTER_S, StagedLearngene, staging
from .util import crash_point, damaged, duplicate_name, reason, sha256

EXAMPLE_NAME = "registry.db.example"
MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 30  # how long SQLite waits for another writer before reporting busy
BUSY_RETRIES = 3  # then the whole transaction is retried this many times, with jittered backoff
PG_SETUP_LOCK = 0x7A6F6F  # advisory lock key ("zoo") serializing schema setup on a PostgreSQL registry
T = TypeVar("T")
# The newest migration in migrations/versions, so opening a registry need not import alembic (checked by a test).
SCHEMA_HEAD = "0005"


def default_registry_path() -> Path:
    return Path(user_data_dir("zoo", appauthor=False)) / "registry.db"


def example_registry_path() -> Path | None:
    env = os.environ.get("ZOO_EXAMPLE_REGISTRY")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / EXAMPLE_NAME)  # source checkout / editable install
    candidates.append(Path(__file__).resolve().parents[1] / "example" / EXAMPLE_NAME)  # a wheel (pyproject.toml)
    return next((p for p in candidates if p.is_file()), None)


def to_url(location: str | os.PathLike[str]) -> str:
    text = os.fspath(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def redact(url: str) -> str:
    """A URL fit for messages: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _engine_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryError(
            f"invalid registry URL '{redact(url)}'; give a file path or a SQLAlchemy URL such as "
            f"postgresql://user:password@host/dbname"
        ) from None
    # postgresql:// means psycopg2 to SQLAlchemy; zoo's [postgres] extra installs psycopg 3
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _alembic_config(engine: Engine, connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _sqlite_connect(dbapi_connection: Any, _record: Any, read_only: bool = False) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching to WAL itself needs the lock (codebase-memory-mcp #116)
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys = ON")
    if read_only:  # `zoo verify`, read-only storage: not even the journal mode changes
        cursor.execute("PRAGMA query_only = ON")
    else:
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")  # a committed learngene survives a power cut too
    cursor.close()
    # zoo emits BEGIN itself (below): pysqlite's implicit transactions start only at the first INSERT, so a
    # transaction that read first would have to upgrade its lock mid-way, which fails at once in WAL mode
    # ("database is locked", no busy wait), and DDL would run outside any transaction
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("zoo_write") else "BEGIN")


def _read_only_reason(path: Path) -> str | None:
    """Why a registry file cannot be written here (a read-only mount, a folder or file without write permission),
    or None. ``os.access`` reports a read-only mount even to root."""
    if path.exists() and not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} cannot be written"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file cannot be written"
    return None


def _read_only_url(parsed: URL, path: Path) -> URL:
    """An SQLite URI that opens ``path`` without writing anything beside it.

    A WAL database needs its ``-shm`` file, which a reader cannot create in a read-only folder: without a pending
    ``-wal`` such a file is opened ``immutable`` (no locks, no sidecars: right for a read-only mount or image
    layer, where nobody writes it meanwhile). Otherwise ``mode=ro``, which still takes SQLite's locks.
    """
    wal = path.with_name(path.name + "-wal")
    folder_locked = not os.access(path.parent, os.W_OK)
    pending = wal.exists() and wal.stat().st_size > 0
    if folder_locked and pending and not path.with_name(path.name + "-shm").exists():
        raise RegistryError(f"cannot open registry {path}: {wal.name} holds writes not yet merged into it, and its "
                            f"folder is read-only; open it once where it can be written (any zoo command merges them) "
                            f"and publish the single file")
    mode = {"immutable": "1"} if folder_locked and not pending else {"mode": "ro"}
    return parsed.set(database="file:" + quote(str(path)), query={**mode, "uri": "true"})


def _sqlstate(orig: BaseException) -> str | None:
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3 / psycopg2


def _is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    if _sqlstate(orig) in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock not available
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _is_damage(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    if _sqlstate(orig) in ("XX001", "XX002"):  # data_corrupted, index_corrupted
        return True
    text = str(orig).lower()
    return any(s in text for s in ("malformed", "not a database", "disk i/o error", "database corrupt"))


class Registry:
    """A learngene registry at a SQLAlchemy URL. Use :func:`open_registry` to get one."""

    def __init__(self, url: str, create: bool = True, check_schema: bool = True, read_only: bool = False):
        parsed = _engine_url(url)
        self.url = parsed.render_as_string(hide_password=False)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.path: Path | None = None
        self.read_only_reason: str | None = None  # set when the storage refuses writes: every write says why
        connect_args: dict[str, Any] = {}
        if self.is_sqlite:
            self.path = self._sqlite_path(parsed, create)
            self.read_only_reason = _read_only_reason(self.path)
            if self.read_only_reason:
                parsed, read_only = _read_only_url(parsed, self.path), True
        elif parsed.get_backend_name() == "postgresql":
            if "connect_timeout" not in parsed.query:
                connect_args["connect_timeout"] = 10  # an unreachable server fails in seconds, not minutes
            if read_only:
                connect_args["options"] = "-c default_transaction_read_only=on"
        try:
            self.engine = create_engine(parsed, connect_args=connect_args)
        except (SQLAlchemyError, ImportError) as exc:
            raise RegistryError(f"cannot use registry URL '{redact(url)}': {reason(exc)}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", functools.partial(_sqlite_connect, read_only=read_only))
            event.listen(self.engine, "begin", _sqlite_begin)
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(self.engine.execution_options(zoo_write=True), expire_on_commit=False)
        if check_schema:
            self._check_schema()

    @staticmethod
    def _sqlite_path(parsed: URL, create: bool) -> Path:
        db = parsed.database
        if not db or db == ":memory:" or parsed.query.get("mode") == "memory":
            raise RegistryError("in-memory registries are not supported; give a file path")
        path = Path(db)
        if not path.exists() and not create:
            raise RegistryError(
                f"registry {path} does not exist; check --registry / $ZOO_REGISTRY, or create it with "
                f"`zoo learngene add SOURCE --registry {path}`"
            )
        if path.is_dir():
            raise RegistryError(f"registry path {path} is a directory; give a file such as {path / 'registry.db'}")
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as fh:  # SQLite would treat a short non-database file as empty, and overwrite it
                if fh.read(16) != b"SQLite format 3\x00":
                    raise RegistryError(f"cannot open registry {path}: the file is not a database (damaged, or not "
                                        f"a registry); nothing was changed: check --registry, or restore a backup")
        if not path.exists() and path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            raise RegistryError(f"cannot create registry {path}: its folder {path.parent} is read-only; give a "
                                f"path on writable storage")
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the registry folder {path.parent}: {exc}") from exc
        return path

    # -- schema --------------------------------------------------------------------------------------------------
    def _script(self) -> Any:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(_alembic_config(self.engine))

    def _schema_state(self) -> tuple[str | None, set[str]]:
        # plain SQL, not alembic's MigrationContext: importing alembic costs ~1 s, and every command opens a registry
        try:
            with self.engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                current = (conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                           if "alembic_version" in tables else None)
        except SQLAlchemyError as exc:
            raise self._error(exc, "cannot open registry") from exc
        return current, tables

    def schema_revision(self) -> tuple[str | None, str]:
        """(the registry's schema revision, this zoo's head revision)."""
        return self._schema_state()[0], SCHEMA_HEAD

    def _check_schema(self) -> None:
        head = SCHEMA_HEAD
        current, tables = self._schema_state()
        if current == head:
            return
        if current is None:
            if tables - {"alembic_version"}:
                raise RegistryError(f"{self.where} is not a zoo registry (it has tables {sorted(tables)})")
            self._migrate(only_if_new=True)  # a new registry: create the schema
            return
        self._refuse(current, head)

    def _refuse(self, current: str, head: str) -> NoReturn:
        known = {rev.revision for rev in self._script().walk_revisions()}
        if current in known:
            raise RegistryError(
                f"registry {self.where} is at schema {current}, this zoo needs {head}; back it up, then run "
                f"`zoo db upgrade --registry {self.where}`"
            )
        raise RegistryError(
            f"registry {self.where} was written by a newer zoo (schema {current}, this zoo knows up to {head}); "
            f"upgrade zoo: pip install -U zoo-learngenes"
        )

    def upgrade(self) -> None:
        """Migrate to this zoo's schema (``zoo db upgrade``); refuses a registry from a newer zoo."""
        current, _tables = self._schema_state()
        head = self._script().get_current_head()
        if current is not None and current not in {rev.revision for rev in self._script().walk_revisions()}:
            self._refuse(current, head)
        self._migrate(only_if_new=False)

    def _migrate(self, only_if_new: bool) -> None:
        """Run the migrations in one transaction, one process at a time; a crash leaves the old schema."""
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        self.check_writable("cannot set up or migrate the registry")
        lock = setup_lock(self.path) if self.path is not None else nullcontext()
        with lock, self.engine.connect() as conn:
            conn.execution_options(zoo_write=True)
            if self.is_sqlite:
                # a batch migration recreates tables: with foreign keys on, dropping `learngenes` would cascade
                # and delete every gene. Off for the migration (it cannot change inside a transaction), checked after.
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_SETUP_LOCK})")
                    if only_if_new and MigrationContext.configure(conn).get_current_revision() is not None:
                        return  # another process created it while we waited for the lock
                    command.upgrade(_alembic_config(self.engine, conn), "head")
                    if self.is_sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RegistryError(f"migrating {self.where} would orphan {len(broken)} rows; rolled back")
                    crash_point("migrate:before-commit")
            except SQLAlchemyError as exc:
                raise self._error(exc, "cannot set up or migrate the registry") from exc
            finally:
                if self.is_sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return str(self.path) if self.path else self.engine.url.render_as_string(hide_password=True)

    # -- transactions --------------------------------------------------------------------------------------------
    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error (errors are not translated here)."""
        session = (self._writers if write else self._readers)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check_writable(self, what: str) -> None:
        """Refuse, in one line, a write to a registry on read-only storage (before anything is attempted)."""
        if self.read_only_reason:
            raise RegistryError(f"{what}: registry {self.where} is read-only ({self.read_only_reason}); nothing was "
                                f"changed: reading commands work, writes need a writable copy or location")

    def run(self, work: Callable[[Session], T], write: bool = False, what: str = "") -> T:
        """``work(session)`` in one transaction, retried while the database stays busy; errors made readable
        (prefixed with ``what``). ``write``: the transaction takes the write lock up front; on a registry on
        read-only storage it is refused first, in one line."""
        if write:
            self.check_writable(what or "cannot write")
        for attempt in range(BUSY_RETRIES + 1):
            try:
                with self.session(write=write) as session:
                    return work(session)
            except IntegrityError:
                raise
            except DBAPIError as exc:
                if _is_busy(exc) and attempt < BUSY_RETRIES:
                    time.sleep(random.uniform(0.2, 1.0) * 2**attempt)
                    continue
                raise self._error(exc, what) from exc
        raise AssertionError("unreachable")

    def _error(self, exc: BaseException, what: str) -> RegistryError:
        prefix = f"{what}: " if what else ""
        if _is_busy(exc):  # never show "database is locked": say what it means and what to do
            return RegistryError(
                f"{prefix}registry {self.where} is busy: another process kept it locked for over {BUSY_TIMEOUT_S} s "
                f"({BUSY_RETRIES + 1} tries); try again"
            )
        if _sqlstate(getattr(exc, "orig", exc)) in ("25006", "42501"):  # read-only transaction, no privilege
            return RegistryError(f"{prefix}registry {self.where} is read-only ({reason(exc)}); nothing was "
                                 f"changed: reading commands work, writes need a user and server allowed to write")
        if "readonly database" in str(getattr(exc, "orig", exc)).lower():
            return RegistryError(f"{prefix}registry {self.where} is read-only; nothing was changed: reading "
                                 f"commands work, writes need a writable copy or location")
        if _is_damage(exc):
            return RegistryError(
                f"{prefix}registry {self.where} is damaged ({reason(exc)}); nothing was repaired: run "
                f"`zoo verify --registry {self.where}` and restore it from a backup"
            )
        return RegistryError(f"{prefix}registry {self.where}: {reason(exc)}")

    # -- reads -----------------------------------------------------------------------------------------------------
    def _info(self, session: Session, row: SqlLearngene, detail: bool = False) -> LearngeneInfo:
        genes = session.execute(
            select(SqlGene.name, SqlGene.axes, SqlGene.source_shape, SqlGene.shape, SqlGene.nbytes, SqlGene.sha256)
            .where(SqlGene.learngene_id == row.id)
            .order_by(SqlGene.id)
        ).all()
        parent = session.get(SqlLearngene, row.parent_id).name if row.parent_id else None
        return learngene_info(row, genes, parent, detail)

    def list(self, family: str | None = None) -> list[LearngeneInfo]:
        def work(session: Session) -> list[LearngeneInfo]:
            query = visible(select(SqlLearngene)).order_by(SqlLearngene.created_at, SqlLearngene.id)
            if family:
                query = query.where(SqlLearngene.family == family)
            return [self._info(session, row) for row in session.scalars(query)]

        return self.run(work, what="cannot list learngenes")

    def get(self, name: str, detail: bool = False) -> LearngeneInfo:
        return self.run(lambda s: self._info(s, learngene_row(s, name), detail=detail),
                         what=f"cannot read learngene '{name}'")

    def genes(self, name: str, device: Any = "cpu", lazy: bool = False) -> dict[str, GeneRecord]:
        """Load every gene of a learngene, each checked against its sha256 first.

        ``lazy``: only the genes' metadata now; each :class:`LazyGeneRecord` reads its tensors when asked
        (``record.loaded()``), one gene at a time, while this registry is open."""
        def decoded(gene: SqlGene, data: bytes | bytearray, digest: str | None = None) -> GeneRecord:
            return gene_record(gene, data if isinstance(data, bytearray) else bytes(data), name, device, digest)

        def work(session: Session) -> dict[str, GeneRecord]:
            row = learngene_row(session, name)
            out: dict[str, GeneRecord] = {}
            if lazy:
                columns = (SqlGene.id, SqlGene.name, SqlGene.axes, SqlGene.source_shape, SqlGene.fan_in)
                for gene_id, gene_name, axes, shape, fan_in in session.execute(
                        select(*columns).where(SqlGene.learngene_id == row.id).order_by(SqlGene.id)):
                    out[gene_name] = LazyGeneRecord(gene_name, tuple(json.loads(axes)), tuple(json.loads(shape)),
                                                    fan_in, functools.partial(self._gene, name, gene_id, decoded))
            else:
                query = with_bytes(select(SqlGene)).where(SqlGene.learngene_id == row.id).order_by(SqlGene.id)
                for gene, data in session.execute(query):
                    out[gene.name] = decoded(gene, data)
            if not out:
                raise RegistryError(f"learngene '{name}' has no genes; the registry is damaged: run `zoo verify`")
            return out

        return self.run(work, what=f"cannot read learngene '{name}'")

    def stored_genes(self, name: str, data: bool = False) -> Iterator[dict[str, Any]]:
        """A learngene's gene rows as stored (name, axes, source_shape, shape, dtype, nbytes, sha256, fan_in), in
        order; with ``data``, each with its bytes too, checked against its sha256 and read one gene at a time
        (``zoo learngene export`` copies them as they are, so hashes carry over)."""
        columns = (SqlGene.id, SqlGene.name, SqlGene.axes, SqlGene.source_shape, SqlGene.shape, SqlGene.dtype,
                   SqlGene.nbytes, SqlGene.sha256, SqlGene.fan_in)

        def rows(session: Session) -> list[Any]:
            row = learngene_row(session, name)
            return list(session.execute(select(*columns).where(SqlGene.learngene_id == row.id).order_by(SqlGene.id)))

        def blob(session: Session, gene_id: int) -> bytes:
            found = gene_bytes(session, gene_id)
            if found is None:
                raise RegistryError(f"learngene '{name}' lost a gene while it was being read (removed meanwhile?)")
            return found

        for r in self.run(rows, what=f"cannot read learngene '{name}'"):
            out = dict(name=r.name, axes=json.loads(r.axes), source_shape=json.loads(r.source_shape),
                       shape=json.loads(r.shape), dtype=r.dtype, nbytes=r.nbytes, sha256=r.sha256, fan_in=r.fan_in)
            if data:
                out["data"] = self.run(functools.partial(blob, gene_id=r.id), what=f"cannot read learngene '{name}'")
                if sha256(out["data"]) != r.sha256:
                    raise RegistryError(damaged(name, f"gene '{r.name}'"))
            yield out

    def _gene(self, name: str, gene_id: int, decoded: Callable[..., GeneRecord]) -> GeneRecord:
        def work(session: Session) -> GeneRecord:
            query = with_holder(select(SqlGene)) if self.is_sqlite else with_bytes(select(SqlGene))
            found = session.execute(query.where(SqlGene.id == gene_id)).first()
            if found is None:
                raise RegistryError(f"learngene '{name}' lost a gene while it was being read (removed meanwhile?)")
            if self.is_sqlite:  # the bytes read in pieces and hashed on the way, not fetched as one value
                gene, holder = found
                return decoded(gene, *read_blob(session, holder))
            return decoded(*found)

        return self.run(work, what=f"cannot read learngene '{name}'")

    def assets(self, name: str) -> dict[str, bytes]:
        def work(session: Session) -> dict[str, bytes]:
            out = {}
            for asset in learngene_row(session, name).assets:
                data = bytes(asset.data)
                if sha256(data) != asset.sha256:
                    raise RegistryError(damaged(name, f"asset '{asset.filename}'"))
                out[asset.filename] = data
            return out

        return self.run(work, what=f"cannot read learngene '{name}'")

    def latest(self, family: str) -> LearngeneInfo | None:
        found = self.list(family=family)
        return found[-1] if found else None

    # -- writes ----------------------------------------------------------------------------------------------------
    def staging(self, info: LearngeneInfo, stale_after_s: float = STALE_AFTER_S) -> ContextManager[StagedLearngene]:
        """Store ``info``'s genes one by one as they come, then ``publish`` them at once (zoo.registry.staging)."""
        return staging(self, info, stale_after_s)

    def add(self, info: LearngeneInfo, genes: Mapping[str, GeneRecord] | Iterable[GeneRecord],
            assets: dict[str, bytes] | None = None) -> None:
        """Store a learngene, its genes and assets in one transaction: all or nothing, even if the process dies.
        (``zoo learngene add`` stores gene by gene while extracting instead: :meth:`staging`.)"""
        records = genes.values() if isinstance(genes, Mapping) else genes
        payloads = [gene_parts(record) for record in records]  # hashed before touching the database
        crash_point("add:serialized")

        def work(session: Session) -> None:
            if session.scalar(select(SqlLearngene.id).where(SqlLearngene.name == info.name)) is not None:
                raise duplicate_name(info.name)
            parent_id = learngene_row(session, info.parent).id if info.parent else None
            row = SqlLearngene(parent_id=parent_id, **learngene_columns(info))
            session.add(row)
            session.flush()
            crash_point("add:learngene-row")
            for i, (columns, parts) in enumerate(payloads):  # fresh ORM rows per attempt: a retry starts clean
                insert_gene(session, row.id, columns, parts)
                crash_point(f"add:gene-{i}")
            crash_point("add:genes-written")
            for filename, data in (assets or {}).items():
                session.add(SqlAsset(learngene_id=row.id, filename=filename, sha256=sha256(data), data=data))
            session.flush()
            share_published(session, row.id)  # on PostgreSQL, what a concurrent add stored meanwhile
            crash_point("add:before-commit")

        try:
            self.run(work, write=True, what=f"cannot add learngene '{info.name}'")
        except IntegrityError as exc:  # a concurrent add of the same name won the race
            raise duplicate_name(info.name) from exc
        crash_point("add:after-commit")

    def vacuum(self) -> tuple[int | None, int | None]:
        """Give the space of removed learngenes back (``zoo db vacuum``): SQLite rewrites the file compactly (it
        otherwise keeps freed pages for reuse); PostgreSQL's VACUUM makes dead rows' space reusable. Returns the
        SQLite file's size before and after (None, None for a server)."""
        self.check_writable("cannot vacuum")

        def size(path: Path | None) -> int | None:  # a server has no file
            if path is None:
                return None
            wal = path.with_name(path.name + "-wal")
            return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

        before = size(self.path)
        try:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection  # VACUUM cannot run inside a transaction
                if self.is_sqlite:
                    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    raw.execute("VACUUM")
                    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                else:
                    raw.autocommit = True
                    for table in ("genes", "assets", "learngenes"):
                        raw.execute(f"VACUUM {table}")
        except DBAPIError as exc:
            raise self._error(exc, "cannot vacuum") from exc
        return before, size(self.path)

    def remove(self, name: str) -> None:
        def work(session: Session) -> None:
            row_id = learngene_row(session, name).id
            if hand_over(session, [row_id]):  # bytes other learngenes share stay, with one of them
                crash_point("rm:handed-over")
            # plain DELETEs: the ORM cascade would first load every gene's bytes into memory
            for table in (SqlGene, SqlAsset):
                session.execute(delete(table).where(table.learngene_id == row_id))
            session.execute(delete(SqlLearngene).where(SqlLearngene.id == row_id))  # children: parent set NULL
            crash_point("rm:before-commit")

        try:
            self.run(work, write=True, what=f"cannot remove learngene '{name}'")
        except IntegrityError as exc:  # the data_of foreign key: a reference to its bytes would be left dangling
            raise RegistryError(f"cannot remove learngene '{name}': genes of other learngenes still share its bytes "
                                f"({reason(exc)}); nothing was changed: run `zoo verify --registry {self.where}`"
                                ) from exc


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
        with setup_lock(path):  # concurrent first runs: one copies, the others find it in place
            if not path.exists():
                # copy then rename, so no process ever opens a half-copied file
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registry-", suffix=".tmp")
                os.close(fd)
                shutil.copyfile(example, tmp)
                os.replace(tmp, path)
    return Registry(to_url(path))
