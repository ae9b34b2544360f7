"""GPT-2 (``transformers.GPT2LMHeadModel``): Conv1D weights are stored ``[in, out]`` and q, k, v are fused in
``c_attn``; both are undone here so the canonical genes look like any other decoder's."""

from __future__ import annotations

from typing import Any

from zoo import hookimpl
from zoo.hf import ClassLayout, TransformersAdapter, WeightMap

H, HEADS, HD, FFN = "hidden", "heads", "head_dim", "ffn"
L = "h.{i}."


class GPT2Adapter(TransformersAdapter):
    name = "gpt2"
    description = "GPT-2 decoders (transformers GPT2LMHeadModel, GPT2Model)"
    arch_aliases = ("gpt",)
    model_types = ("gpt2",)
    source_aliases = {
        "gpt2": "openai-community/gpt2",
        "gpt2-medium": "openai-community/gpt2-medium",
        "gpt2-large": "openai-community/gpt2-large",
        "gpt2-xl": "openai-community/gpt2-xl",
        "distilgpt2": "distilbert/distilgpt2",
    }
    config_keys = {
        "depth": "n_layer",
        H: "n_embd",
        HEADS: "n_head",
        FFN: "n_inner",
        "vocab": "vocab_size",
        "positions": "n_positions",
    }
    key_prefixes = ("transformer.",)
    default_architecture = "GPT2LMHeadModel"
    # GPT2LMHeadModel is these weights in this order under "transformer.", and lm_head tied to wte
    class_layout = ClassLayout("transformer.", {"lm_head.weight": "transformer.wte.weight"}, generates=True)
    weights = (
        WeightMap("embed.tokens", "wte.weight", ("vocab", H)),
        WeightMap("embed.positions", "wpe.weight", ("positions", H)),
        WeightMap("attn.norm.weight", L + "ln_1.weight", (H,)),
        WeightMap("attn.norm.bias", L + "ln_1.bias", (H,)),
        WeightMap("attn.q.weight", L + "attn.c_attn.weight", (HEADS, HD, H), transposed=True, part=(0, 3)),
        WeightMap("attn.k.weight", L + "attn.c_attn.weight", (HEADS, HD, H), transposed=True, part=(1, 3)),
        WeightMap("attn.v.weight", L + "attn.c_attn.weight", (HEADS, HD, H), transposed=True, part=(2, 3)),
        WeightMap("attn.q.bias", L + "attn.c_attn.bias", (HEADS, HD), part=(0, 3)),
        WeightMap("attn.k.bias", L + "attn.c_attn.bias", (HEADS, HD), part=(1, 3)),
        WeightMap("attn.v.bias", L + "attn.c_attn.bias", (HEADS, HD), part=(2, 3)),
        WeightMap("attn.o.weight", L + "attn.c_proj.weight", (H, HEADS, HD), transposed=True, fan_in=2),
        WeightMap("attn.o.bias", L + "attn.c_proj.bias", (H,)),
        WeightMap("mlp.norm.weight", L + "ln_2.weight", (H,)),
        WeightMap("mlp.norm.bias", L + "ln_2.bias", (H,)),
        WeightMap("mlp.up.weight", L + "mlp.c_fc.weight", (FFN, H), transposed=True),
        WeightMap("mlp.up.bias", L + "mlp.c_fc.bias", (FFN,)),
        WeightMap("mlp.down.weight", L + "mlp.c_proj.weight", (H, FFN), transposed=True),
        WeightMap("mlp.down.bias", L + "mlp.c_proj.bias", (H,)),
        WeightMap("final_norm.weight", "ln_f.weight", (H,)),
        WeightMap("final_norm.bias", "ln_f.bias", (H,)),
    )

    def sizes(self, config: Any) -> dict[str, int]:
        sizes = super().sizes(config)
        sizes.setdefault(FFN, 4 * sizes[H])  # n_inner=None means 4 x n_embd
        return sizes

    def finish_config(self, config: dict[str, Any], sizes: Any) -> dict[str, Any]:
        config["n_inner"] = sizes[FFN]
        return config


@hookimpl
def register_architectures(register):
    register(GPT2Adapter())
