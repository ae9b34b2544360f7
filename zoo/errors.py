"""Errors zoo raises on purpose.

Every error is a ``ZooError`` and also a builtin of the right kind, so callers can catch either. The CLI turns a
``ZooError`` into one line and a non-zero exit; tracebacks only appear with ``-v``.
"""

from __future__ import annotations

from collections.abc import Iterable


def choices(names: Iterable[str]) -> str:
    names = sorted(set(names))
    return ", ".join(names) if names else "(none)"


class ZooError(Exception):
    """Base class for errors with a message meant for the user."""


class UnknownNameError(ZooError, KeyError):
    """A name (architecture, transform, learngene, ...) that is not registered."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = ""):
        self.kind, self.name, self.valid = kind, name, sorted(set(valid))
        message = f"unknown {kind} '{name}'; valid choices: {choices(self.valid)}"
        super().__init__(message + (f"; {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(ZooError, ValueError):
    """Two plugins registered the same name, or a learngene name is taken."""


class InvalidConfigError(ZooError, ValueError):
    """A target size or option that cannot be built."""


class SourceNotFoundError(ZooError, FileNotFoundError):
    """A model source that is neither a local path nor reachable on a hub."""


class RegistryError(ZooError):
    """The registry cannot be opened, is damaged, or is at another schema version."""


class ArtifactError(ZooError, ValueError):
    """An exported learngene (``zoo learngene import``) that is malformed, damaged or unsafe: refused whole."""
