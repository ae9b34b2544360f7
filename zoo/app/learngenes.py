"""The registry's learngenes: listing (by family or its alias), showing and removing them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UnknownNameError
from ..inputs import registry_session
from ..plugin_host import catalog

if TYPE_CHECKING:
    from ..registry import LearngeneInfo, Registry


def list_learngenes(registry: Registry | str | None = None, family: str | None = None) -> list[LearngeneInfo]:
    """The registry's learngenes, oldest first; ``family`` may be an alias (``gpt``), an unknown one is an error."""
    with registry_session(registry) as reg:
        if family:
            family = _family(reg, family)
        return reg.list(family=family)


def _family(reg: Registry, family: str) -> str:
    """A family name as stored: an installed architecture or its alias, or a family the registry holds (whose
    plugin may not be installed here)."""
    try:
        return catalog().architecture(family).name
    except UnknownNameError as exc:
        stored = {info.family for info in reg.list()}
        if family in stored:
            return family
        raise UnknownNameError("family", family, [*exc.valid, *stored]) from None


def show_learngene(name: str, registry: Registry | str | None = None) -> LearngeneInfo:
    with registry_session(registry) as reg:
        return reg.get(name, detail=True)


def remove_learngene(name: str, registry: Registry | str | None = None) -> None:
    with registry_session(registry) as reg:
        reg.remove(name)
