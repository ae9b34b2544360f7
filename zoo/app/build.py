"""Materializing models from learngenes: picking the learngene, planning the job (every check before slow work),
building the model in memory or streaming its genes into a folder's files, the dry run's plan, the report
``model.zoo_report`` and ``zoo.json`` hold, and the provenance that rebuilds the model."""

from __future__ import annotations

import hashlib
import math
import os
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..adapters import SIZE_OPTIONS
from ..calibrate import depth_calibrated
from ..dtypes import STORAGE_DTYPES
from ..errors import InvalidConfigError
from ..genes import resizable, shape_for
from ..hf import assemble
from ..inputs import registry_session, resolve_device
from ..materialization import materialize as materialize_genes, materialize_stream
from ..model_folder import check_out, save, write_folder, zoo_output
from ..plugin_host import catalog
from ..registry import LearngeneInfo
from ..request import MaterializeRequest
from .add import add_default_learngene
from .resources import EXTRACT_WORKERS, check_disk, check_memory, progress_bar

if TYPE_CHECKING:
    import torch

    from ..registry import Registry

HIDDEN = SIZE_OPTIONS["hidden"]  # the residual stream's role


def pick_learngene(reg: Registry, request: MaterializeRequest) -> tuple[LearngeneInfo, Any]:
    """The learngene to materialize from, and its adapter."""
    cat, arch, name = catalog(), request.arch, request.learngene
    if name:
        info = reg.get(name)
        adapter = cat.architecture(info.family)
        if arch and cat.architecture(arch) is not adapter:
            raise InvalidConfigError(f"learngene '{name}' is a {info.family} learngene, not {arch}; drop --arch or pick "
                                     f"a {arch} learngene (zoo learngene list)")
        return info, adapter
    assert arch is not None  # a request names a learngene or a family
    adapter = cat.architecture(arch)
    latest = reg.latest(adapter.name)
    if latest is None:
        have = sorted({i.family for i in reg.list()})
        raise InvalidConfigError(
            f"registry {reg.where} has no {adapter.name} learngene (it has: {', '.join(have) or 'none'}); "
            f"add one with `zoo learngene add SOURCE`"
        )
    return latest, adapter


def materialize_request(request: MaterializeRequest, *, registry: Registry | str | None = None,
                        out: str | os.PathLike[str] | None = None, progress: bool = False) -> torch.nn.Module:
    """:func:`materialize` of a :class:`~zoo.request.MaterializeRequest`; the model's weights are of the
    request's ``dtype``."""
    dev = resolve_device(request.device)
    with registry_session(registry) as reg:
        job = _plan(reg, request, dev, out)
        with seeded(request.seed, dev):
            model = _build(job, progress)
        if request.dtype != "float32":
            model.to(STORAGE_DTYPES[request.dtype])
        model.zoo_report.update(provenance(reg, job, request))
        if job.out_dir is not None:
            if hasattr(job.adapter, "load_code"):  # how to load what save() writes, when it is not from_pretrained
                model.zoo_report["load"] = job.adapter.load_code(job.config, job.out_dir)
            save(model, job.adapter, job.out_dir, reg.assets(job.info.name), model.zoo_report)
        return model


def materialize_request_to_disk(request: MaterializeRequest, out: str | os.PathLike[str] | None = None, *,
                                registry: Registry | str | None = None,
                                max_shard_bytes: int = assemble.DEFAULT_SHARD_BYTES, progress: bool = False,
                                overwrite: bool = True, argv: list[str] | None = None, on_demand: Any = None,
                                dry_run: bool = False) -> dict[str, Any]:
    """:func:`materialize_to_disk` of a :class:`~zoo.request.MaterializeRequest`."""
    dev = resolve_device(request.device)
    seed, dtype = request.seed, request.dtype
    with registry_session(registry) as reg:
        if on_demand is not None and request.learngene is None and request.arch and not dry_run:
            add_default_learngene(reg, request.arch, on_demand, progress)
        job = _plan(reg, request, dev, out, in_memory=False)
        if job.out_dir is None:
            job.out_dir = check_out(Path.cwd() / default_out(job), reg)
        if not overwrite and job.out_dir.is_dir() and zoo_output(job.out_dir):
            raise InvalidConfigError(f"{job.out_dir} already holds a model zoo wrote; pass --overwrite to replace it, "
                                     f"or --out DIR")
        assets = reg.assets(job.info.name)
        made = provenance(reg, job, request, argv)
        expected = request.learngene_sha256
        if expected is not None and expected != made["learngene_sha256"]:
            raise InvalidConfigError(
                f"learngene '{job.info.name}' in {reg.where} is not the one this model was built from (content "
                f"sha256 {made['learngene_sha256'][:12]}..., expected {expected[:12]}...); use the registry "
                f"it was built with")
        if dry_run:
            return _dry_run(job, made, dtype)
        if not assemble.streamable(job.adapter):
            with seeded(seed, dev):
                model = _build(job, progress)
            if dtype != "float32":
                model.to(STORAGE_DTYPES[dtype])
            model.zoo_report.update(made)
            if hasattr(job.adapter, "load_code"):
                model.zoo_report["load"] = job.adapter.load_code(job.config, job.out_dir)
            save(model, job.adapter, job.out_dir, assets, model.zoo_report)
            model.zoo_report["out"] = str(job.out_dir)
            return model.zoo_report
        layout, placements, covered, starts = _placed(job)
        job.together = assemble.sharing(placements)
        with seeded(seed, dev):
            fresh = assemble.init_fresh(layout, covered, starts)
        if layout.model is not None:  # else no parameter is fresh
            divide_per_copy_starts(layout.model.state_dict(keep_vars=True), starts, job.strategy, job.records,
                                   job.sizes)
        report = _report(job, layout.class_name, layout.parameter_count, fresh, starts)
        report.update(made)

        def write(folder: Path) -> None:
            with _progress_bar(job, progress) as bar:
                assemble.write_pretrained(layout, placements, _counted(_genes(job), bar), folder,
                                          STORAGE_DTYPES[dtype], max_shard_bytes)

        write_folder(job.out_dir, write, assets, report)
        report["out"] = str(job.out_dir)
        return report


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Draw from torch's generators seeded with ``seed``, leaving the caller's generator state as it was."""
    import torch

    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def default_out(job: _Job) -> str:
    """The folder name a materialization gets when none is given: ``<family>-<layers>x<width>``."""
    return f"{job.adapter.name}-{job.sizes.get('depth', 'x')}x{job.sizes.get('hidden', 'x')}"


def learngene_sha256(reg: Registry, name: str) -> str:
    """A content hash of a learngene: sha256 over its genes' names and sha256s, in stored order."""
    genes = reg.get(name, detail=True).gene_summary
    return hashlib.sha256("".join(f"{g['name']}\t{g['sha256']}\n" for g in genes).encode()).hexdigest()


def provenance(reg: Registry, job: _Job, request: MaterializeRequest, argv: list[str] | None = None
               ) -> dict[str, Any]:
    """What ``zoo.json`` needs to rebuild the model: ``rebuild`` is the request as it was resolved (the
    learngene's name and content hash, the strategy and device used), so ``materialize_to_disk(out, **rebuild)``
    builds it again; ``command`` is the same as a ``zoo materialize`` line."""

    digest = learngene_sha256(reg, job.info.name)
    built = replace(request, arch=None, learngene=job.info.name, strategy=getattr(job.strategy, "name", None),
                    device=str(job.device), learngene_sha256=digest)
    made = {"zoo_version": __version__, "learngene_sha256": digest, "seed": request.seed,
            "dtype": request.dtype, "options": dict(request.options), "rebuild": built.record(),
            "command": built.command(job.out_dir)}
    if argv is not None:
        made["argv"] = shlex.join(argv)
    return made


def _placed(job: _Job) -> tuple[assemble.Layout, dict[str, list[assemble.Placement]], set[str], dict[str, str]]:
    """Where the job's genes go in its target's layout: the layout, the placements, the state-dict keys they
    cover and the uncovered parameters' absent starts. Genes the chosen model class has no place for (an optional
    pooler under BertForMaskedLM) leave the job's records for its skipped list."""
    layout = assemble.layout(job.adapter, job.config, job.records)
    placements = assemble.plan(job.adapter, job.config, layout.params, job.records)
    unplaced = sorted(set(job.records) - set(placements))
    job.skipped = sorted(job.skipped + unplaced)
    job.records = {n: r for n, r in job.records.items() if n not in unplaced}
    covered = {p.key for places in placements.values() for p in places}
    return layout, placements, covered, assemble.absent_starts(job.adapter, job.config, layout, covered)


def _dry_run(job: _Job, made: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The plan of a materialization: what it would build and write, from the layout on ``meta`` (no memory)."""

    params, model_class, fresh = job.adapter.parameter_count(job.config), "?", None
    starts: dict[str, str] = {}
    if assemble.streamable(job.adapter):
        layout, _, covered, starts = _placed(job)
        fresh = sorted(assemble.uncovered(layout, covered))
        params, model_class = layout.parameter_count, layout.class_name
    genes = [{"name": name, "axes": list(r.axes), "source_shape": list(r.source_shape),
              "target_shape": list(shape_for(r.axes, job.sizes))} for name, r in job.records.items()]
    report = _report(job, model_class, params, fresh or [], starts)
    report.update(made, dry_run=True, out=str(job.out_dir), genes=genes,
                  disk_bytes=params * STORAGE_DTYPES[dtype].itemsize)
    if fresh is None:
        report["fresh_parameters"] = None  # known once built: the family builds its own model
    return report


@dataclass
class _Job:
    info: LearngeneInfo
    adapter: Any
    transform: Any
    strategy: Any
    config: dict[str, Any]
    records: dict[str, Any]
    sizes: dict[str, int]
    skipped: list[str]
    reset: list[str]
    stats: str
    device: torch.device
    out_dir: Path | None
    together: list[list[str]] = field(default_factory=list)  # genes sharing a parameter (fused q, k, v)


def _plan(reg: Registry, request: MaterializeRequest, dev: torch.device, out: str | os.PathLike[str] | None,
          in_memory: bool = True) -> _Job:
    """Everything a materialization needs, checked before any slow work."""
    info, adapter = pick_learngene(reg, request)
    transform = catalog().transform(info.transform)
    strategy_obj = request.resize_strategy(transform, info)
    config = request.target_config(adapter, info.source_config)
    out_dir = check_out(out, reg) if out is not None else None  # before any work: refusing late wastes it
    if in_memory or not assemble.streamable(adapter):
        check_memory(adapter.parameter_count(config), dev)
    else:  # streamed to disk: memory holds about one gene, the files hold the model
        check_disk(adapter.parameter_count(config), out_dir)
    records = reg.genes(info.name, device=dev, lazy=not in_memory)  # streamed: one gene's tensors at a time
    sizes = adapter.sizes(config)
    # a gene the target has no room for (a classifier for another class count, a role it lacks) is left out: its
    # parameters keep their fresh init and show up in the report
    skipped = sorted(n for n, r in records.items() if not _fits(r, sizes))
    # genes tuned to the source's last layer stay at their init in a shallower target (see zoo.calibrate)
    reset = [] if getattr(strategy_obj, "keeps_last_layer", False) else depth_calibrated(adapter, records, sizes)
    records = {n: r for n, r in records.items() if n not in skipped and n not in reset}
    return _Job(info, adapter, transform, strategy_obj, config, records, sizes, skipped, reset, request.stats, dev,
                out_dir)


def _genes(job: _Job) -> Iterator[tuple[str, int | None, torch.Tensor]]:
    """The target's genes (layer by layer where the strategy allows), built only as the consumer advances."""
    items = materialize_stream(job.records, job.sizes, job.transform, job.strategy, job.info.transform_params,
                               job.stats, workers=EXTRACT_WORKERS, together=job.together,
                               device=job.device)
    found = _transferred_per_copy(job.adapter, job.strategy, job.records, job.sizes)
    if found is None:
        return items
    divided, copies = found
    return ((name, layer, _per_copy(value, copies) if name in divided else value) for name, layer, value in items)


def per_copy_genes(adapter: Any, records: Mapping[str, Any]) -> set[str]:
    """The learngene's genes whose weight map says ``per_copy`` (:data:`zoo.hf.assemble.ABSENT_INITS`): a gain in
    front of a reader tied to a table whose copied hidden columns it cannot divide. Transferred, such a gene is
    divided by each channel's copies as well, so a grown source's own head counts each channel once too."""
    return {wm.gene for wm in getattr(adapter, "weights", ()) if getattr(wm, "absent", None) == "per_copy"
            and wm.gene in records}


def _transferred_per_copy(adapter: Any, strategy: Any, records: Mapping[str, Any], sizes: Mapping[str, int]
                          ) -> tuple[set[str], torch.Tensor] | None:
    """The ``per_copy`` genes the learngene transfers and each residual channel's copies; None: nothing to divide."""
    divided = per_copy_genes(adapter, records)
    copies = hidden_copies(strategy, records, sizes) if divided else None
    return None if copies is None else (divided, copies)


def divide_per_copy_genes(genome: dict[str, Any], adapter: Any, strategy: Any, records: Mapping[str, Any],
                          sizes: Mapping[str, int]) -> None:
    """Divide a materialized genome's ``per_copy`` genes by each residual channel's copies, in place (the stream
    of :func:`_genes` does the same gene by gene)."""
    found = _transferred_per_copy(adapter, strategy, records, sizes)
    if found is not None:
        divided, copies = found
        genome.update({name: replace(genome[name], tensor=_per_copy(genome[name].tensor, copies))
                       for name in divided if name in genome})


def _per_copy(value: torch.Tensor, copies: torch.Tensor) -> torch.Tensor:
    if value.shape != copies.shape:
        raise InvalidConfigError(f"a per_copy gene has shape {tuple(value.shape)}; it must be one [hidden] gain "
                                 f"({copies.numel()} channels here): fix the weight map's absent rule")
    return value / copies.to(value)


def _counted(items: Iterator[tuple[str, int | None, torch.Tensor]], bar: Any) -> Iterator[Any]:
    """Pass stream items through, ticking ``bar`` once per gene (items may be single layers of a gene)."""
    last = None
    for item in items:
        if item[0] != last:
            if last is not None:
                bar.update(1)
            last = item[0]
        yield item
    if last is not None:
        bar.update(1)


def _progress_bar(job: _Job, enabled: bool) -> Any:
    return progress_bar(len(job.records), f"materialize {job.info.name}", enabled)


def _build(job: _Job, progress: bool) -> torch.nn.Module:
    import torch

    with torch.no_grad():
        if assemble.streamable(job.adapter):
            with _progress_bar(job, progress) as bar:
                model = job.adapter.build_from(job.config, list(job.records), _counted(_genes(job), bar),
                                               device=job.device)
        else:
            genome = materialize_genes(job.records, job.sizes, job.transform, job.strategy,
                                       job.info.transform_params, job.stats)
            divide_per_copy_genes(genome, job.adapter, job.strategy, job.records, job.sizes)
            model = job.adapter.build(job.config, genome, device=job.device)
        divide_per_copy_starts(model.state_dict(keep_vars=True), getattr(model, "zoo_absent_starts", {}),
                               job.strategy, job.records, job.sizes)
    model.zoo_report = _report(job, type(model).__name__, sum(p.numel() for p in model.parameters()),
                               list(getattr(model, "zoo_fresh_parameters", [])),
                               getattr(model, "zoo_absent_starts", {}))
    return model


def hidden_copies(strategy: Any, records: Mapping[str, Any], sizes: Mapping[str, int]) -> torch.Tensor | None:
    """Each target residual channel's number of copies when ``strategy`` resizes ``records`` to ``sizes`` (the
    strategy's optional ``replicas``); None where no channel is a copy or the strategy does not say."""
    replicas, size = getattr(strategy, "replicas", None), sizes.get(HIDDEN)
    if replicas is None or size is None:
        return None
    # every gene's hidden axis is mapped alike: the smallest one answers (a streamed record reads its tensors)
    carriers = [r for r in records.values() if HIDDEN in r.axes]
    if not carriers:
        return None
    record = min(carriers, key=lambda r: math.prod(r.source_shape))
    copies = replicas(record, HIDDEN, size)
    return None if copies is None or bool((copies == 1).all()) else copies


def divide_per_copy_starts(params: Mapping[str, torch.Tensor], starts: Mapping[str, str], strategy: Any,
                           records: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    """Divide the ``per_copy`` absent starts among ``params`` (a model's ``state_dict(keep_vars=True)``) by each
    residual channel's copies under ``strategy`` (:func:`zoo.hf.assemble.divide_by_copies`): both build paths
    call it once the fresh parameters are initialized, and so may a caller that builds with ``adapter.build``."""
    if any(rule == "per_copy" for rule in starts.values()):
        assemble.divide_by_copies(params, starts, hidden_copies(strategy, records, sizes))


def _report(job: _Job, model_class: str, parameters: int, fresh: list[str],
            starts: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "learngene": job.info.name,
        "family": job.info.family,
        "source": job.info.source,
        "model_class": model_class,
        "parameters": parameters,
        "sizes": dict(job.sizes),
        "fresh_parameters": list(fresh),
        # of those, the ones that start as their weight map says (an identity head transform), not at random
        "absent_starts": dict(sorted((starts or {}).items())),
        "skipped_genes": job.skipped,
        "reset_genes": job.reset,
        # how it was built: what the learngene stores, and the options resolved for this build
        "transform": job.info.transform,
        "transform_params": job.info.transform_params,
        "keep": job.info.keep,
        "strategy": getattr(job.strategy, "name", str(job.strategy)),
        "stats": job.stats,
        "device": str(job.device),
    }


def _fits(record: Any, sizes: dict[str, int]) -> bool:
    return all(role in sizes and (resizable(role) or sizes[role] == n)
               for role, n in zip(record.axes, record.source_shape))
