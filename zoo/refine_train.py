"""``zoo refine``: fine-tune a source briefly with its task loss + lambda x the spectral penalty, then store the
refined learngene next to (and linked to) the unrefined one.

Tasks per family: masked LM for encoders (BERT), causal LM for decoders (GPT-2, Llama), classification for ViTs.
Nothing touches the registry until training has finished and both learngenes are extracted in memory, so Ctrl-C
(or any failure) during training leaves the registry as it was.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .dtypes import STORAGE_DTYPES
from .errors import InvalidConfigError, ZooError
from .extraction import extract
from .inputs import apply_options, check_name, registry_session, resolve_device
from .refine import LearngeneSpec, energy_in_block, genome_penalty
from .registry import LearngeneInfo
from .registry.util import now
from .resolver import default_learngene_name, describe_source, find_adapter, resolve_checkpoint
from .sources import write_assets

if TYPE_CHECKING:
    import torch

# From bench/refine.py (docs/refine.md): of lambda 0.1, 1 and 10, lambda 1 gave the lowest mean held-out loss in the
# bert-l2s convergence benchmark; no lambda beat plain fine-tuning (lambda 0) there, and 10 made the final loss worse.
DEFAULT_LAMBDA = 1.0
BUILTIN_TEXT = {"pydoc": "the English prose of Python's pydoc_data.topics (training part: every topic but each 5th)"}
TEXT_SUFFIXES = (".txt", ".md", ".rst")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HELD_OUT_EVERY = 5  # pydoc's held-out topics, the same split as bench/_data.py: never trained on here


@dataclass
class RefineResult:
    model: torch.nn.Module
    genome: dict  # every gene of the source: refined where the task model trained it, else as it was (detached)
    before: dict[str, float]
    after: dict[str, float]
    losses: list[tuple[float, float]]  # (task loss, penalty) per step


# -- data ------------------------------------------------------------------------------------------------------------
def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return "\n".join(t for i, t in enumerate(topics.values()) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1)


def read_text(data: str) -> str:
    """A built-in corpus name, a text file, or a folder of text files (searched recursively)."""
    if data in BUILTIN_TEXT:
        return pydoc_text()
    path = Path(data).expanduser()
    accepted = (f"a built-in corpus ({', '.join(BUILTIN_TEXT)}), a text file, or a folder of "
                f"{'/'.join(TEXT_SUFFIXES)} files")
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    else:
        raise InvalidConfigError(f"--data {data!r} does not exist; give {accepted}")
    try:
        text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(f"--data {data!r}: not UTF-8 text ({exc.reason}); give {accepted}") from None
    if not text.strip():
        raise InvalidConfigError(f"--data {data!r} holds no text; give {accepted}")
    return text


def token_blocks(tokenizer: Any, text: str, length: int, prefix: list[int], suffix: list[int]) -> torch.Tensor:
    import torch

    tokenizer.model_max_length = 1 << 30  # the text is cut into blocks here; silence the over-length warning
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    body = length - len(prefix) - len(suffix)
    blocks = [prefix + ids[i:i + body] + suffix for i in range(0, len(ids) - body + 1, body)]
    if not blocks:
        raise InvalidConfigError(f"--data has {len(ids)} tokens, fewer than one sequence of {length}; give more text "
                                 f"or a smaller --seq")
    return torch.tensor(blocks, dtype=torch.long)


def read_images(data: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """An image folder with one subfolder per class -> (images [n, 3, H, W], labels, class names)."""
    import torch

    try:
        from PIL import Image
    except ImportError:
        raise ZooError("refining a ViT on an image folder needs Pillow: pip install pillow") from None

    root = Path(data).expanduser()
    accepted = "a folder with one subfolder of images per class (e.g. data/cat/*.jpg, data/dog/*.jpg)"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise InvalidConfigError(f"--data {data!r} is not {accepted}")
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]  # ImageNet statistics, as ViT preprocessors use
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                img = Image.open(path).convert("RGB").resize((size[1], size[0]))
                x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(size[0], size[1], 3)
                images.append((x.permute(2, 0, 1).float() / 255 - mean) / std)
                labels.append(label)
    if len(classes) < 2 or not images:
        raise InvalidConfigError(f"--data {data!r} has {len(classes)} class folder(s) and {len(images)} images; "
                                 f"give {accepted}, with at least two classes")
    return torch.stack(images), torch.tensor(labels), classes


def _batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    import torch

    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, max(n - batch, 0) + 1, batch):
            yield order[i:i + batch]


# -- tasks per family ------------------------------------------------------------------------------------------------
def task_kind(config: dict[str, Any], adapter: Any) -> str:
    """``mlm`` for encoders, ``clm`` for decoders, ``classify`` for vision."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    if getattr(adapter, "name", "") == "vit" or "num_channels" in config or "img_size" in config:
        return "classify"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise InvalidConfigError(f"zoo refine has no training task for model type '{model_type}' (it trains masked-LM "
                             f"encoders, causal-LM decoders and ViT classifiers)")


def _tokenizer(checkpoint: Any) -> Any:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:  # the assets the registry stores are what the tokenizer needs
        write_assets(checkpoint.assets, Path(tmp))
        (Path(tmp) / "config.json").write_text(__import__("json").dumps(checkpoint.config))
        try:
            return AutoTokenizer.from_pretrained(tmp)
        except Exception as exc:  # noqa: BLE001 - any loader failure is one line naming the files it had
            raise ZooError(f"cannot load the tokenizer of '{checkpoint.ref}' from its files "
                           f"({', '.join(sorted(checkpoint.assets)) or 'none'}): {exc}") from None


def make_task(kind: str, checkpoint: Any, adapter: Any, data: str, batch: int, seq: int,
              gen: torch.Generator) -> tuple[dict[str, Any], Callable[[torch.nn.Module], torch.Tensor]]:
    """(training config, loss function of the model drawing the next batch)."""
    import torch

    config = dict(checkpoint.config)
    if kind == "classify":
        spec_of = getattr(adapter, "spec", None)  # the ViT adapter's parsed config (img_size is (H, W))
        size = tuple(spec_of(config).img_size) if spec_of else (int(config.get("image_size", 224)),) * 2
        x, y, classes = read_images(data, size)
        config = apply_options(adapter, config, {"format": "hf", "num_classes": len(classes)})
        order = _batches(len(y), batch, gen)

        def classify_loss(model: torch.nn.Module) -> torch.Tensor:
            idx = next(order)
            return torch.nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])

        return config, classify_loss

    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    tok = _tokenizer(checkpoint)
    text = read_text(data)
    model_type = config["model_type"]
    if kind == "mlm":
        config["architectures"] = [MODEL_FOR_MASKED_LM_MAPPING_NAMES[model_type]]
        blocks = token_blocks(tok, text, seq, [tok.cls_token_id], [tok.sep_token_id])
        special = torch.tensor(sorted({tok.cls_token_id, tok.sep_token_id, tok.pad_token_id} - {None}))
        order = _batches(len(blocks), batch, gen)

        def mlm_loss(model: torch.nn.Module) -> torch.Tensor:
            ids = blocks[next(order)]
            chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & ~torch.isin(ids, special)
            roll = torch.rand(ids.shape, generator=gen)
            labels = torch.where(chosen, ids, -100)  # BERT's recipe: 80% [MASK], 10% a random token, 10% kept
            inputs = ids.masked_fill(chosen & (roll < 0.8), tok.mask_token_id)
            swap = chosen & (roll >= 0.8) & (roll < 0.9)
            inputs = torch.where(swap, torch.randint(len(tok), ids.shape, generator=gen), inputs)
            return model(input_ids=inputs, labels=labels).loss

        return config, mlm_loss
    config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    blocks = token_blocks(tok, text, seq, [], [])
    order = _batches(len(blocks), batch, gen)

    def clm_loss(model: torch.nn.Module) -> torch.Tensor:
        ids = blocks[next(order)]
        return model(input_ids=ids, labels=ids).loss

    return config, clm_loss


# -- training --------------------------------------------------------------------------------------------------------
def refine_model(checkpoint: Any, adapter: Any, spec: LearngeneSpec, *, data: str, steps: int, lam: float,
                 lr: float = 1e-4, batch: int = 8, seq: int = 64, seed: int = 0, device: Any = "cpu",
                 progress: bool = True) -> RefineResult:
    """Fine-tune the source with task loss + ``lam`` x penalty; returns the trained model and refined genes."""
    import torch

    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    kind = task_kind(checkpoint.config, adapter)
    config, task_loss = make_task(kind, checkpoint, adapter, data, batch, seq, gen)
    source = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    # penalize and store the source's genes that the training model holds (not a head added for training, nor a
    # pooler the task model lacks); the shapes-only "meta" build finds them without allocating weights
    holds = adapter.to_genome(adapter.build(config, {}, device="meta").state_dict(), config)
    names = sorted(set(source) & set(holds))
    torch.manual_seed(seed)
    model = adapter.build(config, {n: source[n] for n in names}, device=device)
    model.train()
    untouched = {n: g for n, g in source.items() if n not in names}  # kept as they are in the refined learngene
    del source
    before = energy_in_block(model, spec, config, names)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)  # no decay: it would shrink weights the penalty ignores
    warmup = max(1, min(10, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    losses: list[tuple[float, float]] = []
    bar = tqdm(range(steps), desc="refine", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        loss = task_loss(model)
        with torch.set_grad_enabled(bool(lam)):  # lambda 0 (a control run) only reports the penalty
            penalty = genome_penalty(adapter.to_genome(model.state_dict(keep_vars=True), config), spec, names)
        total = loss + lam * penalty if lam else loss
        if not torch.isfinite(total):
            raise ZooError(f"training diverged (loss {loss.item():.3g}); try a smaller --lr or --lambda")
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append((loss.item(), penalty.item()))
        bar.set_postfix(loss=f"{loss.item():.3f}", penalty=f"{penalty.item():.4f}")
    bar.close()
    model.eval()
    after = energy_in_block(model, spec, config, names)
    with torch.no_grad():
        genome = {n: g for n, g in adapter.to_genome(
            {k: v.detach() for k, v in model.state_dict().items()}, config).items() if n in names}
    return RefineResult(model, {**genome, **untouched}, before, after, losses)


def check_inputs(steps: int, lam: float, lr: float, batch: int, seq: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidConfigError(f"--steps must be a whole number >= 1, got {steps!r}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise InvalidConfigError(f"--lambda must be a finite number >= 0, got {lam!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidConfigError(f"--lr must be a positive number, got {lr!r}")
    if batch < 1 or seq < 4:
        raise InvalidConfigError(f"--batch must be >= 1 and --seq >= 4, got {batch} and {seq}")




# -- the registry side: `zoo refine` ----------------------------------------------------------------------------------
def _find_parent(reg: Any, sha: str, spec: LearngeneSpec, parent: str | None) -> tuple[Any, LearngeneSpec]:
    """(the unrefined learngene of this source to link to, or None if it must be added; the spec to refine for)."""
    if parent is not None:
        info = reg.get(parent)
        if info.source_sha256 != sha:
            raise InvalidConfigError(f"--parent '{parent}' was extracted from another checkpoint (sha256 "
                                     f"{info.source_sha256[:12]}..., this source is {sha[:12]}...); give the "
                                     f"learngene of this source, or leave --parent out")
        return info, LearngeneSpec.of(info)
    _, keep, params = spec.resolved()
    for info in reversed(reg.list()):
        if (info.source_sha256 == sha and info.refinement is None and info.transform == spec.transform
                and info.keep == keep and info.transform_params == params):
            return info, spec
    return None, spec


# Refinement moves energy into the kept block, so it needs a block that drops something: unlike zoo's default keep
# (1, the full spectrum), it defaults to FRONT's half.
DEFAULT_REFINE_KEEP = 0.5


def refine_learngene(source: str, *, data: str, steps: int, lam: float = DEFAULT_LAMBDA, transform: str = "dct",
                     keep: Any = DEFAULT_REFINE_KEEP, params: dict[str, Any] | None = None, name: str | None = None,
                     parent: str | None = None, dtype: str = "float32", lr: float = 1e-4, batch: int = 8,
                     seq: int = 64, seed: int = 0, device: Any = "auto", registry: Any = None,
                     progress: bool = True) -> tuple[Any, Any]:
    """Refine ``source`` (FRONT+) and add the refined learngene, linked to its parent; returns (refined, parent).

    The parent is ``parent`` if given (its transform, keep and parameters are then the spec), else the newest
    unrefined learngene of the same checkpoint (sha256) with the same spec, else the source's learngene is extracted
    and added too (named as ``zoo learngene add`` would). The refined one is named ``NAME.refined`` by default.
    Nothing is written before training has finished.
    """
    check_inputs(steps, lam, lr, batch, seq)
    if dtype not in STORAGE_DTYPES:
        raise InvalidConfigError(f"unknown storage dtype '{dtype}'; valid choices: {', '.join(STORAGE_DTYPES)}")
    if name is not None:
        check_name(name)
    dev = resolve_device(device)
    spec = LearngeneSpec(transform, keep, dict(params or {}))
    _, ratios, _ = spec.resolved()  # bad transform, keep or parameters fail here, before any loading
    if lam > 0 and parent is None and all(ratio >= 1.0 for ratio in ratios.values()):
        raise InvalidConfigError("--keep 1 keeps the whole spectrum, so there is nothing outside the block to move "
                                 f"in: refine for a truncated learngene, e.g. --keep {DEFAULT_REFINE_KEEP}")
    if not Path(str(data)).expanduser().exists() and data not in BUILTIN_TEXT:
        raise InvalidConfigError(f"--data {data!r} does not exist; give a text file or folder, a built-in corpus "
                                 f"({', '.join(BUILTIN_TEXT)}), or for ViTs a folder with one subfolder per class")
    with registry_session(registry, create=True) as reg:
        reg.check_writable("cannot refine")  # before training, not after it
        checkpoint = resolve_checkpoint(source)  # as `zoo learngene add` resolves it
        adapter = find_adapter(checkpoint.config)
        sha = checkpoint.sha256()
        parent_info, spec = _find_parent(reg, sha, spec, parent)
        transform_obj, keep_ratios, params = spec.resolved()
        parent_name = (parent_info.name if parent_info
                       else check_name(default_learngene_name(checkpoint, spec.transform)))
        refined_name = check_name(name or f"{parent_name}.refined")
        existing = {i.name for i in reg.list()}
        taken = [n for n in ([refined_name] + ([] if parent_info else [parent_name])) if n in existing]
        if taken:  # refuse now, not after the training
            raise InvalidConfigError(f"the registry already has a learngene named '{taken[0]}'; choose another "
                                     f"with --name" + ("" if parent_info or taken[0] == refined_name else
                                                        " or pass the unrefined one with --parent"))

        result = refine_model(checkpoint, adapter, spec, data=data, steps=steps, lam=lam, lr=lr, batch=batch,
                              seq=seq, seed=seed, device=dev, progress=progress)

        storage = STORAGE_DTYPES[dtype]
        records = extract(result.genome, transform_obj, keep_ratios, params, storage)
        parent_records = None
        if parent_info is None:
            parent_records = extract(adapter.to_genome(checkpoint.state_dict(), checkpoint.config), transform_obj,
                                     keep_ratios, params, storage)
        tail = result.losses[-min(10, len(result.losses)):]
        base = {"family": adapter.name, "source": checkpoint.hub_id or describe_source(source),
                "source_sha256": sha, "source_config": checkpoint.config, "transform": spec.transform,
                "transform_params": params, "keep": keep_ratios, "dtype": dtype, "zoo_version": __version__}
        refinement = {"lambda": lam, "steps": steps, "data": data if data in BUILTIN_TEXT else str(
                      Path(data).expanduser().resolve()), "task": task_kind(checkpoint.config, adapter), "lr": lr,
                      "batch": batch, "seq": seq, "seed": seed,
                      "energy_in_block": {"before": result.before, "after": result.after},
                      "final_task_loss": sum(t for t, _ in tail) / len(tail),
                      "final_penalty": sum(p for _, p in tail) / len(tail)}
        # both learngenes are in memory: write the parent (if new), then the refined one; each add is atomic
        if parent_records is not None:
            reg.add(LearngeneInfo(name=parent_name, created_at=now(), **base), parent_records, checkpoint.assets)
        reg.add(LearngeneInfo(name=refined_name, created_at=now(), parent=parent_name, refinement=refinement,
                              **base), records, checkpoint.assets)
        return reg.get(refined_name), reg.get(parent_name)


__all__ = ["BUILTIN_TEXT", "DEFAULT_LAMBDA", "RefineResult", "check_inputs", "read_text", "refine_learngene",
           "refine_model", "task_kind"]
