"""The Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .adapters import DEFAULT_MAX_PARAMS
from .errors import InvalidConfigError, UnknownNameError, ZooError
from .pipeline import STORAGE_DTYPES, extract, materialize as materialize_genes, parse_keep
from .plugins import catalog, pm
from .registry import LearngeneInfo, Registry, open_registry
from .registry.store import now
from .sources import resolve

DEFAULT_KEEP = 0.5
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEVICES = ("auto", "cpu", "cuda")


@contextmanager
def _registry(registry: Registry | str | os.PathLike[str] | None, create: bool = False) -> Iterator[Registry]:
    """The given registry, or one opened (and closed again) from a location."""
    if isinstance(registry, Registry):
        yield registry
        return
    reg = open_registry(registry, create=create)
    try:
        yield reg
    finally:
        reg.close()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise InvalidConfigError(
            f"invalid learngene name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def resolve_device(device: str | torch.device | None) -> torch.device:
    text = str(device or "auto")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text.startswith("cuda"):
        if not re.fullmatch(r"cuda(:\d+)?", text):
            raise InvalidConfigError(f"invalid device '{text}'; valid choices: auto, cpu, cuda, cuda:N")
        if not torch.cuda.is_available():
            raise InvalidConfigError(f"device '{text}' requested but CUDA is not available here; use --device cpu or auto")
        return torch.device(text)
    raise InvalidConfigError(f"invalid device '{text}'; valid choices: {', '.join(DEVICES)}, cuda:N")


def find_adapter(config: dict[str, Any]) -> Any:
    cat = catalog()
    model_type = config.get("model_type")
    for entry in cat.architectures.values():
        if model_type in getattr(entry.obj, "model_types", ()):
            return entry.obj
    supported = [t for e in cat.architectures.values() for t in getattr(e.obj, "model_types", ())]
    raise UnknownNameError("model type", str(model_type), supported, hint="install a zoo plugin for it")


def _default_name(checkpoint: Any, transform: str) -> str:
    if checkpoint.hub_id:
        base = checkpoint.hub_id.rsplit("/", 1)[-1]
    else:
        folder = checkpoint.root
        base = folder.parent.name if folder.name in ("model", "models", "weights", "checkpoint") else folder.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-._").lower() or "model"
    return f"{base}.{transform}"


def add_learngene(
    source: str,
    *,
    transform: str = "dct",
    keep: float | str | dict[str, float] | None = DEFAULT_KEEP,
    name: str | None = None,
    dtype: str = "float32",
    registry: Registry | str | None = None,
    params: dict[str, Any] | None = None,
    parent: str | None = None,
    notes: str | None = None,
) -> LearngeneInfo:
    """Extract a learngene from ``source`` (folder, file, hub id or alias) and store it in the registry."""
    cat = catalog()
    transform_obj = cat.transform(transform)
    keep_ratios = parse_keep(keep)
    if dtype not in STORAGE_DTYPES:
        raise InvalidConfigError(f"unknown storage dtype '{dtype}'; valid choices: {', '.join(STORAGE_DTYPES)}")
    if name is not None:
        check_name(name)
    params = check_params(transform_obj, params)
    with _registry(registry, create=True) as reg:  # open first: a broken registry fails before the slow extraction
        return _add(reg, source, cat, transform, transform_obj, keep_ratios, name, dtype, params, parent, notes)


def _add(reg: Registry, source: str, cat: Any, transform: str, transform_obj: Any, keep_ratios: dict[str, float],
         name: str | None, dtype: str, params: dict[str, Any] | None, parent: str | None,
         notes: str | None) -> LearngeneInfo:
    checkpoint = pm.hook.resolve_source(source=source)
    if checkpoint is None:
        aliases = {a: hub for e in cat.architectures.values() for a, hub in getattr(e.obj, "source_aliases", {}).items()}
        checkpoint = resolve(source, aliases, aliases)
    adapter = find_adapter(checkpoint.config)
    genome = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    roles = {role for gene in genome.values() for role in gene.axes}
    unknown_roles = sorted(set(keep_ratios) - roles - {"*"})
    if unknown_roles:
        raise InvalidConfigError(f"--keep names roles this {adapter.name} model does not have: "
                                 f"{', '.join(unknown_roles)}; its roles: {', '.join(sorted(roles))}")
    records = extract(genome, transform_obj, keep_ratios, params, STORAGE_DTYPES[dtype])
    info = LearngeneInfo(
        name=check_name(name or _default_name(checkpoint, transform)),
        family=adapter.name,
        source=checkpoint.hub_id or _describe_source(source),
        source_sha256=checkpoint.sha256(),
        source_config=checkpoint.config,
        transform=transform,
        transform_params=params,
        keep=keep_ratios,
        dtype=dtype,
        zoo_version=__version__,
        created_at=now(),
        parent=parent,
        notes=notes,
    )
    reg.add(info, records, checkpoint.assets)
    return reg.get(info.name)


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


def _describe_source(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def pick_learngene(reg: Registry, arch: str | None, name: str | None) -> tuple[LearngeneInfo, Any]:
    """The learngene to materialize from, and its adapter."""
    cat = catalog()
    if name:
        info = reg.get(name)
        adapter = cat.architecture(info.family)
        if arch and cat.architecture(arch) is not adapter:
            raise InvalidConfigError(f"learngene '{name}' is a {info.family} learngene, not {arch}; drop --arch or pick "
                                     f"a {arch} learngene (zoo learngene list)")
        return info, adapter
    if not arch:
        raise InvalidConfigError(f"give --arch (one of {', '.join(sorted(cat.architectures))}) or --from NAME")
    adapter = cat.architecture(arch)
    info = reg.latest(adapter.name)
    if info is None:
        have = sorted({i.family for i in reg.list()})
        raise InvalidConfigError(
            f"registry {reg.where} has no {adapter.name} learngene (it has: {', '.join(have) or 'none'}); "
            f"add one with `zoo learngene add SOURCE`"
        )
    return info, adapter


def _check_memory(params: int, device: torch.device) -> None:
    need = params * 4
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        available = free
    else:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    if params > DEFAULT_MAX_PARAMS or (available is not None and need * 2 > available):
        raise InvalidConfigError(
            f"the target has {params:,} parameters and needs about {2 * need / 2**30:.1f} GiB to build "
            f"({(available or 0) / 2**30:.1f} GiB free on {device.type}); choose smaller sizes"
        )


def materialize(
    arch: str | None = None,
    *,
    learngene: str | None = None,
    layers: int | None = None,
    hidden: int | None = None,
    heads: int | None = None,
    ffn: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
    positions: int | None = None,
    registry: Registry | str | None = None,
    device: str | torch.device | None = "auto",
    strategy: str | None = None,
    stats: str = "restore",
    out: str | os.PathLike[str] | None = None,
) -> torch.nn.Module:
    """Build a model of the requested sizes from a learngene; unset sizes keep the source's.

    Returns the model (in eval mode, on ``device``). With ``out``, also writes a folder that
    ``from_pretrained`` loads. ``model.zoo_report`` says which learngene was used and which parameters no gene
    covered (those keep the family's random init).
    """
    dev = resolve_device(device)
    with _registry(registry) as reg:
        return _materialize(reg, arch, learngene, dict(layers=layers, hidden=hidden, heads=heads, ffn=ffn,
                            kv_heads=kv_heads, head_dim=head_dim, positions=positions), dev, strategy, stats, out)


def _materialize(reg: Registry, arch: str | None, learngene: str | None, requested: dict[str, int | None],
                 dev: torch.device, strategy: str | None, stats: str,
                 out: str | os.PathLike[str] | None) -> torch.nn.Module:
    info, adapter = pick_learngene(reg, arch, learngene)
    cat = catalog()
    transform = cat.transform(info.transform)
    strategy_obj = cat.resize_strategy(strategy or getattr(transform, "default_strategy", "spectral"))
    config = adapter.target_config(info.source_config, **requested)
    _check_memory(adapter.parameter_count(config), dev)
    out_dir = Path(out).expanduser() if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise InvalidConfigError(f"--out {out_dir} exists and is not a folder")
    records = reg.genes(info.name, device=dev)
    with torch.no_grad():
        genome = materialize_genes(records, adapter.sizes(config), transform, strategy_obj, info.transform_params, stats)
        model = adapter.build(config, genome, device=dev)
    model.zoo_report = {
        "learngene": info.name,
        "family": info.family,
        "source": info.source,
        "sizes": {k: v for k, v in adapter.sizes(config).items()},
        "fresh_parameters": list(getattr(model, "zoo_fresh_parameters", [])),
    }
    if out_dir is not None:
        save(model, adapter, out_dir, reg.assets(info.name), model.zoo_report)
    return model


def save(model: torch.nn.Module, adapter: Any, out_dir: Path, assets: dict[str, bytes], report: dict) -> None:
    """Write the model folder next to a temporary name, then move it in place, so a crash leaves no half folder."""
    import shutil
    import tempfile

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        adapter.save(model, tmp)
        for filename, data in assets.items():
            if "/" in filename or filename.startswith("."):
                continue
            (tmp / filename).write_bytes(data)
        (tmp / "zoo.json").write_text(json.dumps(report, indent=2) + "\n")
        if out_dir.exists():
            if any(out_dir.iterdir()) and not (out_dir / "zoo.json").exists():
                raise ZooError(f"--out {out_dir} is a non-empty folder that zoo did not write; choose another")
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def list_learngenes(registry: Registry | str | None = None, family: str | None = None) -> list[LearngeneInfo]:
    with _registry(registry) as reg:
        return reg.list(family=family)


def show_learngene(name: str, registry: Registry | str | None = None) -> LearngeneInfo:
    with _registry(registry) as reg:
        return reg.get(name, detail=True)


def remove_learngene(name: str, registry: Registry | str | None = None) -> None:
    with _registry(registry) as reg:
        reg.remove(name)
