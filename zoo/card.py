"""The model card (``README.md``) of a materialized folder: Hub metadata, and how the model was made.

Everything comes from the materialization report (``zoo.json``) and what the learngene recorded about its source,
so the card says nothing ``zoo.json`` does not back.
"""

from __future__ import annotations

import json
import re
from typing import Any

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# what `pipeline()` should run, by the materialized class's name (the first suffix that matches)
PIPELINE_TAGS = (
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
    ("ForSequenceClassification", "text-classification"),
    ("ForImageClassification", "image-classification"),
    ("ForImageClassificationWithTeacher", "image-classification"),
)
VISION_FAMILIES = ("vit", "deit", "dinov2")


def base_model(source: str, hub_id: str | None = None) -> str | None:
    """The hub repo a learngene came from: its recorded hub id, else a source recorded as ``org/name (...)``."""
    if hub_id and HUB_ID.match(hub_id):
        return hub_id
    first = source.split(" ", 1)[0]
    return first if HUB_ID.match(first) and not first.startswith(("/", ".")) else None


def pipeline_tag(report: dict[str, Any], files: list[str]) -> str | None:
    model_class = report.get("model_class", "")
    for suffix, tag in PIPELINE_TAGS:
        if model_class.endswith(suffix):
            return tag
    if "modules.json" in files:  # a sentence-transformers model: embeddings of sentences
        return "sentence-similarity"
    if report.get("family") in VISION_FAMILIES or model_class.startswith(("ViT", "DeiT", "Dinov2", "Vision")):
        return "image-feature-extraction"
    return "feature-extraction"


def metadata(report: dict[str, Any], source_info: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """The card's YAML front matter, as a dict (keys the Hub reads; ``None`` values left out)."""
    timm = str(report.get("load", "")).startswith("timm.")  # the load call zoo printed: timm.create_model(...)
    base = base_model(report.get("source", ""), source_info.get("hub_id"))
    tags = ["zoo", "learngene", report.get("family"), report.get("transform")]
    if "modules.json" in files:
        tags.insert(0, "sentence-transformers")
    meta = {
        "base_model": base,
        # the Hub knows adapter, merge, quantized and finetune; weights derived from the base's belong with finetune
        "base_model_relation": "finetune" if base else None,
        # sentence-transformers loads such a folder whole (modules.json: transformer, pooling, normalize)
        "library_name": "timm" if timm else "sentence-transformers" if "modules.json" in files else "transformers",
        "license": source_info.get("license"),
        "pipeline_tag": pipeline_tag(report, files),
        "tags": [t for t in tags if t],
    }
    return {k: v for k, v in meta.items() if v is not None}


def _yaml(meta: dict[str, Any]) -> str:
    """YAML for flat string and list values; every scalar JSON-quoted (JSON strings are valid YAML)."""
    lines = []
    for key, value in meta.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {json.dumps(str(v))}" for v in value)
        else:
            lines.append(f"{key}: {json.dumps(str(value))}")
    return "\n".join(lines)


def render(report: dict[str, Any], source_info: dict[str, Any], files: list[str]) -> str:
    """The whole ``README.md``."""
    meta = metadata(report, source_info, files)
    sizes = report.get("sizes", {})
    shape = ", ".join(f"{k} {sizes[k]}" for k in ("depth", "hidden", "heads", "kv_heads", "head_dim", "ffn", "vocab")
                      if k in sizes)
    title = report.get("name") or f"{report.get('family')}-{sizes.get('depth')}x{sizes.get('hidden')}"
    fresh = report.get("fresh_parameters") or []
    keep = report.get("keep") or {}
    keep_text = ", ".join(f"{k}={v:g}" if k != "*" else f"{v:g}" for k, v in sorted(keep.items()))
    lines = [
        "---", _yaml(meta), "---", "",
        f"# {title}", "",
        f"A {report.get('model_class')} ({report.get('parameters', 0) / 1e6:.1f}M parameters; {shape}) "
        f"**initialized without training** by zoo (`pip install zoo-learngenes`) from the learngene "
        f"`{report.get('learngene')}`, the low-frequency part of the weights of "
        f"{meta.get('base_model') or report.get('source')}.",
        "",
        "It is a starting point for training, not a trained model: fine-tune it before use.",
        "",
        "## How it was made",
        "",
        f"- **Source:** {report.get('source')}" + (f" (license: {meta['license']})" if "license" in meta else ""),
        f"- **Learngene:** `{report.get('learngene')}` (sha256 `{report.get('learngene_sha256', '?')}`): "
        f"{report.get('transform')} coefficients, keep {keep_text or '?'}",
        f"- **Resize strategy:** {report.get('strategy')}; statistics rule: {report.get('stats')}",
        f"- **Sizes:** {shape}",
        f"- **Seed** for parameters no gene covers: {report.get('seed')}; weights saved as "
        f"{report.get('dtype', 'float32')}",
        f"- **Built with** zoo {report.get('zoo_version')} on {report.get('device')}",
    ]
    for name in report.get("generated_files") or []:
        lines.append(f"- **{name}** was written by zoo (the source had none): check it matches how you will feed "
                     f"the model")
    if fresh:
        shown = ", ".join(f"`{p}`" for p in fresh[:6]) + (" ..." if len(fresh) > 6 else "")
        lines.append(f"- **Fresh parameters** (no gene; the family's random init): {shown}")
    if report.get("reset_genes"):
        lines.append(f"- **Left at init** (tuned to the source's last layer): {', '.join(report['reset_genes'])}")
    lines += ["", "Rebuild it, byte for byte, from a registry holding the same learngene (or run "
              "`zoo materialize --like THIS_FOLDER --out NEW`, which checks the learngene's content first):", "",
              "```bash", report.get("command", ""), "```", "", "## Use", "", "```python", _usage(report, meta), "```", "",
              "`zoo.json` beside this card records every option of the build.", ""]
    return "\n".join(lines)


def _usage(report: dict[str, Any], meta: dict[str, Any]) -> str:
    load = report.get("load")
    if load:
        return f"import {load.split('.', 1)[0]}\nmodel = {load}"
    cls = report.get("model_class", "AutoModel")
    return f"from transformers import {cls}\nmodel = {cls}.from_pretrained(\"path/to/this/folder\")"


__all__ = ["base_model", "metadata", "pipeline_tag", "render"]
