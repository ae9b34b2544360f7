"""Llama-layout decoders (``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``),
and the ``resolve_source`` hook that reads GGUF files (:mod:`zoo_plugins.sources.gguf_reader`).

Grouped-query attention gets its own axes. In transformers, query head ``h`` reads key/value head
``h // q_per_kv``, i.e. the query heads of one KV group are contiguous. So q's rows are viewed as
``(kv_heads, q_per_kv, head_dim)`` and o's columns likewise: the KV-group count and the group size resize
independently, and a query head's group follows from its position, as in the model. k and v are
``(kv_heads, head_dim)``.

RoPE has no weights; the target config keeps the source's ``rope_theta`` / ``rope_scaling`` / ``rope_parameters``
and states ``head_dim`` explicitly. That stays consistent when the head size is resized: a rotary pair is (i,
i + head_dim/2) with frequency theta^(-2i/head_dim), a function of the *relative* position i/head_dim, and
resizing an axis spectrally keeps relative positions. So both halves of a target pair come from the same source
pair, which had the same frequency (up to the smoothing where the two halves meet).

SwiGLU's gate, up and down projections are three genes sharing the ``ffn`` axis. Tied embeddings stay tied: a tied
checkpoint has no lm_head gene, and the built model re-ties it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from zoo import hookimpl
from zoo.errors import InvalidConfigError
from zoo.genes import DEPTH
from zoo.hf import SIZE_OPTIONS, TransformersAdapter, WeightMap, heads_hint
from zoo.sources import Checkpoint
from zoo_plugins.sources.gguf_reader import find_gguf, gguf_checkpoint

H, HEADS, KV, QG, HD, FFN = "hidden", "heads", "kv_heads", "q_per_kv", "head_dim", "ffn"
L = "layers.{i}."
ATTN, MLP = L + "self_attn.", L + "mlp."


def _weights(*extra: WeightMap) -> tuple[WeightMap, ...]:
    return (
        WeightMap("embed.tokens", "embed_tokens.weight", ("vocab", H)),
        WeightMap("attn.norm.weight", L + "input_layernorm.weight", (H,)),
        WeightMap("attn.q.weight", ATTN + "q_proj.weight", (KV, QG, HD, H)),
        WeightMap("attn.k.weight", ATTN + "k_proj.weight", (KV, HD, H)),
        WeightMap("attn.v.weight", ATTN + "v_proj.weight", (KV, HD, H)),
        WeightMap("attn.o.weight", ATTN + "o_proj.weight", (H, KV, QG, HD), fan_in=3),
        # Qwen2 always has q/k/v biases; Llama has them (and an o bias) with attention_bias=True
        WeightMap("attn.q.bias", ATTN + "q_proj.bias", (KV, QG, HD), optional=True),
        WeightMap("attn.k.bias", ATTN + "k_proj.bias", (KV, HD), optional=True),
        WeightMap("attn.v.bias", ATTN + "v_proj.bias", (KV, HD), optional=True),
        WeightMap("attn.o.bias", ATTN + "o_proj.bias", (H,), optional=True),
        WeightMap("mlp.norm.weight", L + "post_attention_layernorm.weight", (H,)),
        WeightMap("mlp.gate.weight", MLP + "gate_proj.weight", (FFN, H)),
        WeightMap("mlp.up.weight", MLP + "up_proj.weight", (FFN, H)),
        WeightMap("mlp.down.weight", MLP + "down_proj.weight", (H, FFN)),
        WeightMap("mlp.gate.bias", MLP + "gate_proj.bias", (FFN,), optional=True),  # Llama mlp_bias=True
        WeightMap("mlp.up.bias", MLP + "up_proj.bias", (FFN,), optional=True),
        WeightMap("mlp.down.bias", MLP + "down_proj.bias", (H,), optional=True),
        *extra,
        WeightMap("final_norm.weight", "norm.weight", (H,)),
        WeightMap("lm_head.weight", "lm_head.weight", ("vocab", H), optional=True, fan_in=1),  # only when untied
    )


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _resample(values: list[Any], n: int) -> list[Any]:
    """Per-layer config values (``layer_types``) at ``n`` layers, nearest by relative depth."""
    if len(values) == n or not values:
        return list(values)
    last = len(values) - 1
    return [values[round(i * last / (n - 1)) if n > 1 else last // 2] for i in range(n)]


class LlamaLayout(TransformersAdapter):
    """What the families below share; each names its model type and class."""

    config_keys = {
        DEPTH: "num_hidden_layers",
        H: "hidden_size",
        HEADS: "num_attention_heads",
        KV: "num_key_value_heads",
        HD: "head_dim",
        FFN: "intermediate_size",
        "vocab": "vocab_size",
    }
    key_prefixes = ("model.",)
    size_options = ("layers", "hidden", "heads", "kv_heads", "head_dim", "ffn")
    weights = _weights()
    heads_divide_width = False  # whether the config class insists that the head count divides the width
    # the final RMSNorm's gain is calibrated for the source's last layer; a shallower target starts with it at ones
    # (zoo.calibrate explains why and what it measured)
    depth_calibrated_genes = ("final_norm.weight",)
    # a decoder's deep blocks before its last ones change the stream least (Gromov et al.), and its last ones
    # prepare the tied output layer: measured in docs/ablations.md
    depth_rule = "contiguous"

    def sizes(self, config: Mapping[str, Any]) -> dict[str, int]:
        sizes = super().sizes(config)  # head_dim defaults to hidden // heads when the config leaves it out
        sizes.setdefault(KV, sizes[HEADS])
        sizes[QG] = sizes[HEADS] // sizes[KV]
        return sizes

    def target_config(self, config: Mapping[str, Any], **requested: int | None) -> dict[str, Any]:
        """The source config with the requested sizes.

        Unset sizes follow the source: the head size is kept when it divides the width (else heads are kept and
        the head size follows), the query-group size (heads per KV head) is kept, and the feed-forward width
        keeps its ratio to the width. A source whose heads x head_dim differs from its width keeps its head size
        and head count unless asked. ``--head-dim`` is always honoured, even when heads x head_dim is not the width.
        """
        self.check_requested(requested)
        src = self.sizes(config)
        want = {SIZE_OPTIONS[k]: v for k, v in requested.items() if v is not None}
        t = {**src, **want}
        if H in want and FFN not in want:
            t[FFN] = max(1, round(src[FFN] * t[H] / src[H]))
        conventional = src[HEADS] * src[HD] == src[H]
        follow = conventional and HD not in want  # the head size is width / heads
        if conventional and HEADS not in want and (H in want or HD in want) and t[H] % t[HD] == 0:
            t[HEADS] = t[H] // t[HD]
        if (follow or self.heads_divide_width) and t[H] % t[HEADS]:
            if HEADS not in want and HD not in want:
                raise InvalidConfigError(heads_hint(t[H], src[HEADS], src[HD], _divisors(t[H])))
            raise InvalidConfigError(f"--heads {t[HEADS]} does not divide --hidden {t[H]}; head counts that divide "
                                     f"it: {_divisors(t[H])}{'' if self.heads_divide_width else ' (or set --head-dim)'}")
        if follow:
            t[HD] = t[H] // t[HEADS]
        if KV not in want:
            if t[HEADS] % src[QG]:
                raise InvalidConfigError(f"--heads {t[HEADS]} is not a multiple of the source's {src[QG]} query "
                                         f"heads per KV head; give --kv-heads (one of {_divisors(t[HEADS])})")
            t[KV] = t[HEADS] // src[QG]
        if t[HEADS] % t[KV]:
            raise InvalidConfigError(f"--kv-heads {t[KV]} does not divide --heads {t[HEADS]}; "
                                     f"valid: {_divisors(t[HEADS])}")
        t[QG] = t[HEADS] // t[KV]
        if t[HD] != src[HD]:
            self._check_rope(config, src[HD])
        out = copy.deepcopy(dict(config))
        for role, key in self.config_keys.items():
            out[key] = t[role]  # head_dim is always written: RoPE reads it, and it may differ from hidden/heads
        if isinstance(out.get("layer_types"), list):
            out["layer_types"] = _resample(out["layer_types"], t[DEPTH])
        return out

    @staticmethod
    def _check_rope(config: Mapping[str, Any], head_dim: int) -> None:
        # longrope-style scaling stores one factor per rotary frequency: those lists are tied to the head size
        for key in ("rope_scaling", "rope_parameters"):
            params = config.get(key)
            if isinstance(params, Mapping) and any(isinstance(v, list) and len(v) == head_dim // 2
                                                   for v in params.values()):
                raise InvalidConfigError(f"this model's {key} has per-frequency factors for head size {head_dim}; "
                                         f"keep the head size (leave out --head-dim, or set --head-dim {head_dim})")

    def gene_maps(self, config: Mapping[str, Any]) -> tuple[WeightMap, ...]:
        if config.get("tie_word_embeddings", False):  # the same tensor as embed.tokens; build() re-ties it
            return tuple(wm for wm in self.weights if wm.gene != "lm_head.weight")
        return self.weights


class LlamaAdapter(LlamaLayout):
    name = "llama"
    description = "Llama decoders (transformers LlamaForCausalLM): RoPE, GQA, SwiGLU, RMSNorm; GGUF sources"
    model_types = ("llama",)
    source_aliases = {
        "smollm2-135m": "HuggingFaceTB/SmolLM2-135M",
        "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }
    default_architecture = "LlamaForCausalLM"
    heads_divide_width = True  # transformers' LlamaConfig rejects it otherwise, even with an explicit head_dim


class MistralAdapter(LlamaLayout):
    name = "mistral"
    description = "Mistral decoders (transformers MistralForCausalLM): the Llama layout with sliding windows"
    model_types = ("mistral",)
    source_aliases = {"mistral-7b": "mistralai/Mistral-7B-v0.1"}
    default_architecture = "MistralForCausalLM"


class Qwen2Adapter(LlamaLayout):
    name = "qwen2"
    description = "Qwen2 / Qwen2.5 decoders (transformers Qwen2ForCausalLM): the Llama layout with q/k/v biases"
    model_types = ("qwen2",)
    source_aliases = {"qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B"}
    default_architecture = "Qwen2ForCausalLM"


class Qwen3Adapter(LlamaLayout):
    name = "qwen3"
    description = "Qwen3 decoders (transformers Qwen3ForCausalLM): the Llama layout with per-head q/k RMSNorms"
    model_types = ("qwen3",)
    source_aliases = {"qwen3-0.6b": "Qwen/Qwen3-0.6B"}
    default_architecture = "Qwen3ForCausalLM"
    weights = _weights(WeightMap("attn.q_norm.weight", ATTN + "q_norm.weight", (HD,)),
                       WeightMap("attn.k_norm.weight", ATTN + "k_norm.weight", (HD,)))


@hookimpl
def resolve_source(source: str) -> Checkpoint | None:  # GGUF files (of any family transformers reads from GGUF)
    path = find_gguf(source)
    return gguf_checkpoint(path, source) if path is not None else None


@hookimpl
def register_architectures(register):
    for adapter in (LlamaAdapter(), MistralAdapter(), Qwen2Adapter(), Qwen3Adapter()):
        register(adapter)
