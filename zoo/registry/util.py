"""Small helpers every part of the registry shares: timestamps, hashes, the messages for duplicates and damage,
readable database errors, and the crash points the reliability tests kill the process at."""

from __future__ import annotations

import hashlib
import os
import signal
from datetime import datetime, timezone

from ..errors import DuplicateNameError


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def sha256(data: bytes | bytearray | memoryview) -> str:  # any buffer hashlib reads
    return hashlib.sha256(data).hexdigest()


def crash_point(name: str) -> None:
    """Test hook: with ``ZOO_TEST_KILL_AT=name`` the process SIGKILLs itself here (tests/test_reliability.py)."""
    if os.environ.get("ZOO_TEST_KILL_AT") == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def duplicate_name(name: str) -> DuplicateNameError:
    return DuplicateNameError(
        f"a learngene named '{name}' already exists; pick another with --name, or remove it first with "
        f"`zoo learngene rm {name}`"
    )


def damaged(name: str, part: str) -> str:
    return (f"learngene '{name}' {part} is damaged (sha256 mismatch); nothing was repaired: run `zoo verify`, then "
            f"restore the registry from a backup or re-add it (`zoo learngene rm {name}`, then `zoo learngene add`)")


def reason(exc: BaseException) -> str:
    """The first line of a database error (the driver's message, without SQLAlchemy's wrapping)."""
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0] if str(orig or exc).strip() else type(exc).__name__
