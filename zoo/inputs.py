"""What users give the API, the CLI and ``zoo refine``, checked and turned into objects: learngene names, transform
parameters, a family's target options, devices, and registries (an open one, or a location to open)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from .registry import Registry

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEVICES = ("auto", "cpu", "cuda")


@contextmanager
def registry_session(registry: Registry | str | os.PathLike[str] | None, create: bool = False) -> Iterator[Registry]:
    """The given registry, or one opened (and closed again) from a location."""
    from .registry.store import Registry, open_registry  # SQLAlchemy: only commands that open a registry load it

    if isinstance(registry, Registry):
        yield registry
        return
    reg = open_registry(registry, create=create)
    try:
        yield reg
    finally:
        reg.close()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):  # fullmatch: `$` would allow "x\n"
        raise InvalidConfigError(
            f"invalid learngene name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_device(device: str | torch.device | None) -> str:
    """The device as text (``None``: auto), refused unless it names one zoo runs on; whether it is there is
    :func:`resolve_device`'s question."""
    text = str(device or "auto")
    if text in DEVICES:
        return text
    if text.startswith("cuda"):
        if not re.fullmatch(r"cuda(:\d+)?", text):
            raise InvalidConfigError(f"invalid device '{text}'; valid choices: auto, cpu, cuda, cuda:N")
        return text
    raise InvalidConfigError(f"invalid device '{text}'; valid choices: {', '.join(DEVICES)}, cuda:N")


def resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    text = check_device(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidConfigError(f"device '{text}' requested but CUDA is not available here; use --device cpu or auto")
    return torch.device(text)


def check_params(transform: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    """The transform's parameters with defaults filled in; unknown names are an error listing the valid ones."""
    accepted: dict[str, Any] = dict(getattr(transform, "parameters", {}))
    params = dict(params or {})
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidConfigError(
            f"transform '{transform.name}' has no parameter {', '.join(repr(u) for u in unknown)}; "
            f"valid: {', '.join(sorted(accepted)) or '(none)'}"
        )
    validate = getattr(transform, "validate_params", None)
    merged = {**accepted, **params}
    return validate(merged) if validate else merged


def apply_options(adapter: Any, config: dict[str, Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """The target config with the family's extra options (``--set KEY=VALUE``); unknown keys name the valid ones."""
    if not options:
        return config
    accepted = getattr(adapter, "target_options", {})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidConfigError(f"architecture '{adapter.name}' has no option {', '.join(repr(u) for u in unknown)}; "
                                 f"valid: {', '.join(sorted(accepted)) or '(none)'}")
    return adapter.apply_options(config, dict(options))
