"""Adding learngenes: extracting one from a source (calibrated first for a transform that orders units by
importance) into the registry, and the default learngene of a family the registry has none of."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..dtypes import STORAGE_DTYPES
from ..errors import InvalidConfigError, ZooError
from ..extraction import extract_groups, gene_groups, kept_size, parse_keep
from ..genes import DEPTH, genome_of, shape_for
from ..importance import DEFAULT_SAMPLES, ordered_groups
from ..inputs import check_name, check_params, registry_session, resolve_device
from ..plugin_host import catalog
from ..registry import LearngeneInfo
from ..registry.util import now
from ..resolver import (default_learngene_name, describe_source, find_adapter, read_weights, reading,
                        resolve_checkpoint, unreadable)
from ..share import artifact_folder, import_learngene
from ..sources import HUB_ID
from .resources import EXTRACT_WORKERS, progress_bar

if TYPE_CHECKING:
    import torch

    from ..registry import Registry

DEFAULT_KEEP = 1.0  # the ablations in docs/ablations.md: keep 1 trains best; lower it to store less
DEFAULT_TRANSFORM = "ordered"  # docs/results.md: it trains fastest on every family


def add_learngene(
    source: str,
    *,
    transform: str = DEFAULT_TRANSFORM,
    keep: float | str | dict[str, float] | None = DEFAULT_KEEP,
    name: str | None = None,
    dtype: str = "float32",
    registry: Registry | str | None = None,
    params: dict[str, Any] | None = None,
    parent: str | None = None,
    notes: str | None = None,
    progress: bool = False,
    device: str | torch.device | None = "auto",
    calibrate: str | os.PathLike[str] = "default",
    calibrate_samples: int = DEFAULT_SAMPLES,
    import_exported: bool = True,
) -> LearngeneInfo:
    """Extract a learngene from ``source`` (folder, file, hub id or alias) and store it in the registry.

    A transform that orders units by importance (``ordered``) needs calibration: ``calibrate`` is ``"default"``
    (built-in prose for language models, photographs for vision), a folder or file of your own data, or
    ``"none"`` (scores from the weights alone); ``calibrate_samples`` sequences or images are run once.

    Safetensors checkpoints are read one tensor at a time and each gene is encoded as soon as it is extracted,
    so memory holds one gene group, not the checkpoint (docs/performance.md). ``device``: where the transforms run
    (``auto``: a GPU when there is one); weights are read on the CPU and moved one layer at a time.

    A folder or ``ORG/REPO`` written by ``zoo learngene export`` is imported as it is (:mod:`zoo.share`), unless
    ``import_exported`` is False (the caller has looked already)."""
    if import_exported and artifact_folder(source) is not None:
        return import_learngene(source, registry=registry, name=name).info
    cat = catalog()
    transform_obj = cat.transform(transform)
    keep_ratios = parse_keep(keep)
    if dtype not in STORAGE_DTYPES:
        raise InvalidConfigError(f"unknown storage dtype '{dtype}'; valid choices: {', '.join(STORAGE_DTYPES)}")
    if name is not None:
        check_name(name)
    params = check_params(transform_obj, params)
    dev = resolve_device(device)
    # open first: a broken registry fails before the slow extraction
    with registry_session(registry, create=True) as reg:
        reg.check_writable(f"cannot add a learngene from '{source}'")  # read-only storage: before reading the source
        return _add(reg, source, transform, transform_obj, keep_ratios, name, dtype, params, parent, notes,
                    progress, dev, (calibrate, calibrate_samples))


def _add(reg: Registry, source: str, transform: str, transform_obj: Any, keep_ratios: dict[str, float],
         name: str | None, dtype: str, params: dict[str, Any], parent: str | None,
         notes: str | None, progress: bool = False, device: torch.device | None = None,
         calibrate: tuple[Any, int] = ("default", DEFAULT_SAMPLES)) -> LearngeneInfo:
    checkpoint = resolve_checkpoint(source)
    adapter = find_adapter(checkpoint.config)
    groups = list(gene_groups(adapter, read_weights(checkpoint, source), checkpoint.config))
    roles = {role for group in groups for _, axes, _ in group.genes for role in axes}
    unknown_roles = sorted(set(keep_ratios) - roles - {"*"})
    if unknown_roles:
        raise InvalidConfigError(f"--keep names roles this {adapter.name} model does not have: "
                                 f"{', '.join(unknown_roles)}; its roles: {', '.join(sorted(roles))}")
    info_name = check_name(name or default_learngene_name(checkpoint, transform))
    calibration, selected = None, False
    if getattr(transform_obj, "needs_calibration", False):
        if keep_ratios.get(DEPTH, 1.0) != 1.0:
            raise InvalidConfigError(f"transform '{transform}' keeps every layer (materialization picks them); "
                                     f"drop depth from --keep")
        if keep_ratios["*"] != 1.0:  # a plain ratio ranks the width axes; every layer is kept
            keep_ratios = {**keep_ratios, DEPTH: 1.0}
        import torch

        from ..calibration import calibrate as run_calibration  # runs the model: torch, transformers

        try:
            genome = genome_of(groups)  # the source's weights, read once for the calibration model
        except (ValueError, OSError) as exc:  # a damaged file: the same one line as when extraction finds it
            raise unreadable(source, exc) from exc
        with torch.no_grad():
            calibration = run_calibration(adapter, checkpoint, genome, calibrate[0], calibrate[1], device=device)
        if any(ratio < 1.0 for ratio in keep_ratios.values()):  # store the most important units only
            groups = list(ordered_groups(groups, calibration, lambda role, n: kept_size(n, role, keep_ratios)))
            selected = True
    info = LearngeneInfo(
        name=info_name, family=adapter.name, source=checkpoint.hub_id or describe_source(source), source_sha256="",
        source_config=checkpoint.config, transform=transform, transform_params=params, keep=keep_ratios, dtype=dtype,
        zoo_version=__version__, created_at=now(), parent=parent, notes=notes,
        calibration=calibration.to_bytes() if calibration is not None else None,
    )
    on_gpu = device is not None and device.type != "cpu"
    records = reading(source, extract_groups(groups, transform_obj, {"*": 1.0} if selected else keep_ratios, params,
                                              STORAGE_DTYPES[dtype], device=device if on_gpu else None,
                                              workers=EXTRACT_WORKERS))
    if selected:  # the layers were read already cut to their kept units: record the source's own shapes
        sizes = adapter.sizes(checkpoint.config)
        records = (replace(r, source_shape=shape_for(r.axes, sizes)) for r in records)
    # Three things overlap: the source's hash (a second full read) on one thread, the extraction (its workers and
    # this thread), and the registry writes on another thread, one gene at a time while the next is extracted.
    # The learngene becomes visible at publish, in one transaction (zoo.registry.staging).
    # (the writer is left before the staging: a gene still being written when an error ends the add finishes first,
    # and is then removed with the rest)
    with ThreadPoolExecutor(1, thread_name_prefix="zoo-sha256") as hasher, reg.staging(info) as staged, \
            ThreadPoolExecutor(1, thread_name_prefix="zoo-write") as writer, \
            progress_bar(sum(len(g.genes) for g in groups), f"extract {info_name}", progress) as bar:
        digest = hasher.submit(checkpoint.sha256)
        written: Future[None] | None = None
        for record in records:
            if written is not None:
                written.result()  # one gene in the writer's hands at a time: memory holds at most two
            written = writer.submit(staged.put, record)
            bar.update(1)
        if written is not None:
            written.result()
        staged.publish(replace(info, source_sha256=digest.result(), created_at=now()), checkpoint.assets)
    return reg.get(info.name)


def default_source(adapter: Any) -> str | None:
    """Where a family's learngene comes from when the registry has none: the adapter's ``default_source``, else
    its first source alias (GPT-2: openai-community/gpt2)."""
    return getattr(adapter, "default_source", None) or next(iter(getattr(adapter, "source_aliases", {}).values()),
                                                            None)


def add_default_learngene(reg: Registry, arch: str, notify: Any, progress: bool = False) -> LearngeneInfo | None:
    """A learngene of ``arch`` from its family's default source, added when the registry has none (else ``None``).

    The source is looked up before anything is said or written: with no network and no cached copy this is one
    line naming what the registry has instead."""

    adapter = catalog().architecture(arch)
    source = default_source(adapter)
    if reg.latest(adapter.name) is not None or not source or not HUB_ID.match(source):
        return None
    try:
        resolve_checkpoint(source)
    except ZooError as exc:
        have = sorted({i.family for i in reg.list()})
        alternatives = f"--arch {' or --arch '.join(have)}, " if have else ""
        reason = "no network?" if "unreachable" in str(exc) else str(exc).split(": ", 1)[-1].split(";")[0]
        raise InvalidConfigError(
            f"registry {reg.where} has no {adapter.name} learngene (it has: {', '.join(have) or 'none'}), and its "
            f"default source {source} is not in the Hugging Face cache and could not be downloaded ({reason}); use "
            f"{alternatives}or add one with `zoo learngene add SOURCE`") from None
    notify(f"registry {reg.where} has no {adapter.name} learngene: adding one from {source}, the family's default "
           f"source")
    return add_learngene(source, registry=reg, progress=progress)
