"""Hook specifications: the whole plugin contract.

Plugins implement these with ``@zoo.hookimpl``. Each hook receives a ``register`` callback rather than returning
values, so the host can validate every entry and record which plugin it came from. Hooks are always called with
keyword arguments, and new arguments are only ever added, so old plugins keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pluggy

if TYPE_CHECKING:
    from .adapters import ArchitectureAdapter
    from .sources import Checkpoint
    from .transforms import ResizeStrategy, Transform

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")

T_contra = TypeVar("T_contra", contravariant=True)


class Register(Protocol[T_contra]):
    """The callback a registration hook receives: ``register(obj, replace=False)`` adds ``obj`` to the catalog
    under ``obj.name``. A name another plugin registered is an error unless ``replace`` is true. Annotate a hook
    implementation with it (``register: Register[Transform]``) and a type checker checks what it registers."""

    def __call__(self, obj: T_contra, replace: bool = False) -> None: ...


@hookspec
def register_architectures(register: Register[ArchitectureAdapter]) -> None:
    """Register architecture adapters.

    :param register: call ``register(adapter, replace=False)`` for each adapter. An adapter has a ``name`` (the
        family, e.g. ``"bert"``) and implements :class:`zoo.adapters.ArchitectureAdapter`.
    """


@hookspec
def register_transforms(register: Register[Transform]) -> None:
    """Register weight transforms (e.g. ``dct``).

    :param register: call ``register(transform, replace=False)``; a transform implements
        :class:`zoo.transforms.Transform`.
    """


@hookspec
def register_resize_strategies(register: Register[ResizeStrategy]) -> None:
    """Register resize strategies (e.g. ``spectral``).

    :param register: call ``register(strategy, replace=False)``; a strategy implements
        :class:`zoo.transforms.ResizeStrategy`.
    """


@hookspec(firstresult=True)
def resolve_source(source: str) -> Checkpoint | None:
    """Turn what the user typed after ``zoo learngene add`` into a :class:`zoo.sources.Checkpoint`.

    Implement this for sources zoo's own resolver does not know (a GGUF file, a timm model name, an ONNX file).
    Return ``None`` when ``source`` is not yours. Stops at the first non-``None`` result; zoo's resolver (local HF
    folders and files, hub ids, adapters' aliases) runs when no plugin answers.

    :param source: the string the user gave.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``zoo`` CLI.

    :param cli: the root :class:`click.Group`.
    """
