"""transformers ViT, DeiT and Dinov2: layouts, configs, model building.

Layouts use the checkpoint (hub) names that ``save_pretrained`` writes. transformers 5 renames the attention and
MLP weights of these classes in memory (``layers.N.attention.q_proj`` for ``encoder.layer.N.attention.attention
.query``; Dinov2 keeps ``encoder.layer`` and its ``mlp.fc1``); the renames below map both namings to one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.errors import InvalidConfigError

from .vit_common import Layout, ViTSpec, compact, pair

if TYPE_CHECKING:
    import torch

L = "encoder.layer.{i}."
ATTENTION = {
    "attn.q.weight": L + "attention.attention.query.weight",
    "attn.q.bias": L + "attention.attention.query.bias",
    "attn.k.weight": L + "attention.attention.key.weight",
    "attn.k.bias": L + "attention.attention.key.bias",
    "attn.v.weight": L + "attention.attention.value.weight",
    "attn.v.bias": L + "attention.attention.value.bias",
    "attn.o.weight": L + "attention.output.dense.weight",
    "attn.o.bias": L + "attention.output.dense.bias",
}
EMBEDDINGS = {
    "embed.patch.weight": "embeddings.patch_embeddings.projection.weight",
    "embed.patch.bias": "embeddings.patch_embeddings.projection.bias",
    "embed.cls": "embeddings.cls_token",
    "embed.dist": "embeddings.distillation_token",
    "embed.mask": "embeddings.mask_token",
    "embed.pos_cls": "embeddings.position_embeddings:cls",
    "embed.pos_dist": "embeddings.position_embeddings:dist",
    "embed.pos": "embeddings.position_embeddings:grid",
    "final_norm.weight": "layernorm.weight",
    "final_norm.bias": "layernorm.bias",
}
VIT_KEYS = {
    **EMBEDDINGS, **ATTENTION,
    "attn.norm.weight": L + "layernorm_before.weight",
    "attn.norm.bias": L + "layernorm_before.bias",
    "mlp.norm.weight": L + "layernorm_after.weight",
    "mlp.norm.bias": L + "layernorm_after.bias",
    "mlp.up.weight": L + "intermediate.dense.weight",
    "mlp.up.bias": L + "intermediate.dense.bias",
    "mlp.down.weight": L + "output.dense.weight",
    "mlp.down.bias": L + "output.dense.bias",
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
}
DINOV2_KEYS = {
    **EMBEDDINGS, **ATTENTION,
    "attn.norm.weight": L + "norm1.weight",
    "attn.norm.bias": L + "norm1.bias",
    "attn.scale": L + "layer_scale1.lambda1",
    "mlp.norm.weight": L + "norm2.weight",
    "mlp.norm.bias": L + "norm2.bias",
    "mlp.up.weight": L + "mlp.fc1.weight",
    "mlp.up.bias": L + "mlp.fc1.bias",
    "mlp.down.weight": L + "mlp.fc2.weight",
    "mlp.down.bias": L + "mlp.fc2.bias",
    "mlp.scale": L + "layer_scale2.lambda1",
}
# transformers 5 in-memory names -> checkpoint names
ATTENTION_RENAMES = (
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
)
VIT_RENAMES = (
    (r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2."),
    *ATTENTION_RENAMES,
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
)
# model_type -> (class without a head, class with one, layer norm eps default)
CLASSES = {
    "vit": ("ViTModel", "ViTForImageClassification", 1e-12),
    "deit": ("DeiTModel", "DeiTForImageClassificationWithTeacher", 1e-12),
    "dinov2": ("Dinov2Model", "Dinov2ForImageClassification", 1e-6),
}
HEAD_CLASSES = {cls for _, cls, _ in CLASSES.values()} | {"DeiTForImageClassification"}


def spec_of(config: dict[str, Any]) -> ViTSpec:
    model_type = config["model_type"]
    hidden = int(config["hidden_size"])
    if model_type == "dinov2":
        if config.get("use_swiglu_ffn"):
            raise InvalidConfigError("Dinov2 with a SwiGLU MLP (giant) is not supported by zoo's vit genes")
        ffn = int(hidden * float(config.get("mlp_ratio", 4)))
    else:
        ffn = int(config["intermediate_size"])
    arch = (config.get("architectures") or [CLASSES[model_type][0]])[0]
    classes = (len(config.get("id2label") or {}) or int(config.get("num_labels", 2))) if arch in HEAD_CLASSES else 0
    return ViTSpec(
        library="hf", depth=int(config["num_hidden_layers"]), hidden=hidden, heads=int(config["num_attention_heads"]),
        ffn=ffn, img_size=pair(config.get("image_size", 224), "image_size"),
        patch_size=pair(config.get("patch_size", 16), "patch_size"), channels=int(config.get("num_channels", 3)),
        dist_token=model_type == "deit", layer_scale=model_type == "dinov2",
        qkv_bias=bool(config.get("qkv_bias", True)),
        num_classes=classes, eps=float(config.get("layer_norm_eps", CLASSES[model_type][2])),
    )


def model_type_for(spec: ViTSpec) -> str:
    """transformers' class family for ``spec``; refuses what none of them can express."""
    problems = [what for what, bad in (
        ("no class token", not spec.class_token), ("register tokens", spec.reg_tokens),
        ("no position embedding for the class token", not spec.embed_prefix),
        (f"global_pool='{spec.pool}'", spec.pool != "token"), ("fc_norm", spec.fc_norm),
        ("LayerScale and a distillation token", spec.layer_scale and spec.dist_token),
    ) if bad]
    if problems:
        raise InvalidConfigError(f"transformers' ViT/DeiT/Dinov2 cannot express {', '.join(problems)}; "
                                 "write it for timm instead (--set format=timm)")
    return "dinov2" if spec.layer_scale else "deit" if spec.dist_token else "vit"


def config_of(spec: ViTSpec, base: dict[str, Any] | None = None) -> dict[str, Any]:
    from transformers import AutoConfig

    model_type = model_type_for(spec)
    if base is None or base.get("model_type") != model_type:
        base = AutoConfig.for_model(model_type).to_dict()
    config = dict(base)
    for key in ("stage_names", "out_features", "out_indices"):  # Dinov2's backbone settings follow the depth
        config.pop(key, None)
    config.update(
        hidden_size=spec.hidden, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
        image_size=compact(spec.img_size), patch_size=compact(spec.patch_size), num_channels=spec.channels,
        qkv_bias=spec.qkv_bias, layer_norm_eps=spec.eps,
    )
    if "pooler_output_size" in config:  # the pooler gene is square (hidden x hidden)
        config["pooler_output_size"] = spec.hidden
    if model_type == "dinov2":
        if spec.ffn % spec.hidden:  # transformers 5 types Dinov2Config.mlp_ratio as an int
            raise InvalidConfigError(f"transformers' Dinov2 needs the MLP width to be a multiple of the width "
                                     f"({spec.hidden}), got {spec.ffn}; pick --ffn accordingly or --set format=timm")
        config["mlp_ratio"] = spec.ffn // spec.hidden
    else:
        config["intermediate_size"] = spec.ffn
    headless, with_head, _ = CLASSES[model_type]
    arch = (base.get("architectures") or [None])[0]
    if spec.num_classes:
        if arch not in HEAD_CLASSES:
            arch = with_head
        if len(config.get("id2label") or {}) != spec.num_classes:
            config["id2label"] = {str(i): f"LABEL_{i}" for i in range(spec.num_classes)}
            config["label2id"] = {f"LABEL_{i}": i for i in range(spec.num_classes)}
    elif arch is None or arch in HEAD_CLASSES:
        arch = headless
    config["architectures"] = [arch]
    return config


def layout_for(config: dict[str, Any]) -> Layout:
    return LAYOUTS[config["model_type"]]


# ViTForImageClassification and DeiTForImageClassification call the head "classifier"; DeiT with a teacher
# has a class-token and a distillation head
CLASSIFIER = [("head.weight", "classifier.weight"), ("head.bias", "classifier.bias")]
TEACHER = [("head.weight", "cls_classifier.weight"), ("head.bias", "cls_classifier.bias"),
           ("head_dist.weight", "distillation_classifier.weight"), ("head_dist.bias", "distillation_classifier.bias")]
POSITIONS = "embeddings.position_embeddings"
LAYOUTS = {
    "vit": Layout("hf-vit", [*VIT_KEYS.items(), *CLASSIFIER], POSITIONS, ("vit.",), VIT_RENAMES, spec_of),
    "deit": Layout("hf-deit", [*VIT_KEYS.items(), *CLASSIFIER, *TEACHER], POSITIONS, ("deit.",), VIT_RENAMES, spec_of),
    "dinov2": Layout("hf-dinov2", DINOV2_KEYS.items(), POSITIONS, ("dinov2.",), ATTENTION_RENAMES, spec_of),
}


def create(config: dict[str, Any], genome: dict[str, Any], device: Any = "cpu") -> torch.nn.Module:
    import torch

    import transformers

    arch = config["architectures"][0]
    cls = getattr(transformers, arch, None)
    if cls is None:
        raise InvalidConfigError(f"transformers has no class {arch}")
    cfg = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
    hf_config = transformers.AutoConfig.for_model(config["model_type"], **cfg)
    kwargs = {}
    if arch in ("ViTModel", "DeiTModel"):  # a pooler only when the learngene has one
        kwargs["add_pooling_layer"] = "pooler.weight" in genome
    with torch.device(device):
        return cls(hf_config, **kwargs)
