"""The Python API; the CLI is a thin layer over these functions.

A facade over the application layer (:mod:`zoo.app`), which adds, lists, shows and removes learngenes and builds a
:class:`~zoo.request.MaterializeRequest`; :func:`materialize` and :func:`materialize_to_disk` make the request from
their keywords."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .app.add import DEFAULT_KEEP, DEFAULT_TRANSFORM, add_learngene
from .app.build import materialize_request, materialize_request_to_disk
from .app.learngenes import list_learngenes, remove_learngene, show_learngene
from .hf import assemble
from .importance import DEFAULT_SAMPLES
from .request import DEFAULT_SEED, MaterializeRequest
from .resolver import default_learngene_name

if TYPE_CHECKING:
    import torch

    from .registry import Registry

__all__ = [
    "DEFAULT_KEEP", "DEFAULT_SAMPLES", "DEFAULT_TRANSFORM", "add_learngene", "list_learngenes", "materialize",
    "materialize_request", "materialize_request_to_disk", "materialize_to_disk", "remove_learngene", "show_learngene",
    # the learngene name the source resolver gives a checkpoint
    "default_learngene_name",
]


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
    options: dict[str, Any] | None = None,
    progress: bool = False,
    seed: int | None = DEFAULT_SEED,
) -> torch.nn.Module:
    """Build a model of the requested sizes from a learngene; unset sizes keep the source's.

    ``options`` are the family's other target settings (``adapter.target_options``, e.g. a ViT's ``img_size``).

    Returns the model (in eval mode, on ``device``). With ``out``, also writes a folder that
    ``from_pretrained`` loads. ``seed`` seeds the init of parameters no gene covers (``None``: not seeded).
    ``model.zoo_report`` says which learngene was used and which parameters no gene
    covered (those keep the family's random init). Genes are built one at a time and copied into the model, so
    memory holds the model plus one gene. To write a folder without holding the model, use
    :func:`materialize_to_disk`.
    """
    request = MaterializeRequest(arch, learngene=learngene, layers=layers, hidden=hidden, heads=heads, ffn=ffn,
                                 kv_heads=kv_heads, head_dim=head_dim, positions=positions, strategy=strategy,
                                 stats=stats, options=options or {}, seed=seed, device=str(device or "auto"))
    return materialize_request(request, registry=registry, out=out, progress=progress)


def materialize_to_disk(
    out: str | os.PathLike[str] | None,
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
    options: dict[str, Any] | None = None,
    dtype: str = "float32",
    max_shard_bytes: int = assemble.DEFAULT_SHARD_BYTES,
    progress: bool = False,
    seed: int | None = DEFAULT_SEED,
    overwrite: bool = True,
    argv: list[str] | None = None,
    on_demand: Any = None,
    dry_run: bool = False,
    learngene_sha256: str | None = None,
) -> dict[str, Any]:
    """Like :func:`materialize` with ``out``, but streaming: each gene is built (on ``device``) and written into
    the safetensors files at once, so memory holds about one gene, never the model. Returns the report that
    ``zoo.json`` holds. ``dtype`` is the saved weights' type (float32, float16 or bfloat16); above
    ``max_shard_bytes`` the weights are sharded with an index file, as ``save_pretrained`` does.

    Families whose adapter has its own build or save (timm ViTs, ...) are built in memory, then saved.

    ``out=None``: a folder in the current directory named after the model (``bert-4x256``). ``overwrite=False``
    refuses a folder that already holds zoo's output (a folder zoo did not write is always refused). ``seed``
    seeds the init of parameters no gene covers (``None``: not seeded). ``argv``: the command line as typed, kept
    in ``zoo.json``. The folder gets a model card (``README.md``) unless the user's own is there already.

    ``on_demand``: a function taking a message; when given and the registry has no learngene of ``arch`` (and no
    ``learngene`` is named), one is added first from the family's default source (the hub, or its local cache),
    and the function is told so.

    ``dry_run``: check and plan everything, write nothing, and return the plan: the report ``zoo.json`` would hold
    plus ``disk_bytes`` and, per gene, its shape in the source and in the target (``genes``).

    ``learngene_sha256``: the content hash the learngene must have (a rebuild from ``zoo.json`` passes it, so a
    learngene re-added under the same name is refused rather than silently building other weights).
    """
    request = MaterializeRequest(arch, learngene=learngene, layers=layers, hidden=hidden, heads=heads, ffn=ffn,
                                 kv_heads=kv_heads, head_dim=head_dim, positions=positions, strategy=strategy,
                                 stats=stats, options=options or {}, seed=seed, dtype=dtype,
                                 device=str(device or "auto"), learngene_sha256=learngene_sha256)
    return materialize_request_to_disk(request, out, registry=registry, max_shard_bytes=max_shard_bytes,
                                       progress=progress, overwrite=overwrite, argv=argv, on_demand=on_demand,
                                       dry_run=dry_run)
