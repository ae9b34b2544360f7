"""Serialize first-time setup of a registry file across processes.

Two zoo processes opening a brand-new registry at once would both find no schema and both run the migrations
("table learngenes already exists"), or both copy the bundled example into place. MLflow guards the same step with
a file lock; zoo locks ``<registry>.lock`` next to the database (``filelock``: ``flock`` on POSIX, ``msvcrt`` on
Windows, released by the OS if the holder dies). Server databases use a PostgreSQL advisory lock instead (see the
store). Normal reads and writes never take this lock: SQLite's own locking (WAL, busy timeout) handles them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import RegistryError

SETUP_TIMEOUT = 300.0  # seconds; migrating a large registry can take a while


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def setup_lock(db_path: Path, timeout: float = SETUP_TIMEOUT) -> Iterator[None]:
    lock = FileLock(str(lock_path(db_path)), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise RegistryError(
            f"registry {db_path} is being set up or migrated by another process (waited {timeout:.0f} s for "
            f"{lock_path(db_path)}); try again when it finishes"
        ) from None
    except OSError as exc:
        raise RegistryError(f"cannot lock {lock_path(db_path)}: {exc}") from exc
    try:
        yield
    finally:
        lock.release()
