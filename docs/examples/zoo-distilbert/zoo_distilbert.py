"""A zoo plugin for DistilBERT (``transformers.DistilBertModel``, ``DistilBertForMaskedLM``, ...).

The whole plugin is this file: one adapter class that says where each weight lives and which role each of its
axes plays, and one hook that registers it. zoo does extraction, resizing and model building from that.
"""

from __future__ import annotations

import zoo
from zoo.hf import TransformersAdapter, WeightMap

H, HEADS, HD, FFN = "hidden", "heads", "head_dim", "ffn"
L = "transformer.layer.{i}."  # per-layer keys: {i} is the layer index, stacked into a leading "depth" axis

__version__ = "0.1.0"


class DistilBertAdapter(TransformersAdapter):
    name = "distilbert"
    description = "DistilBERT encoders (transformers DistilBertModel, DistilBertForMaskedLM, ...)"
    model_types = ("distilbert",)  # config.json "model_type" values this adapter reads
    source_aliases = {"distilbert-base": "distilbert/distilbert-base-uncased"}  # zoo learngene add distilbert-base
    # role -> config key holding its size
    config_keys = {"depth": "n_layers", H: "dim", HEADS: "n_heads", FFN: "hidden_dim", "vocab": "vocab_size",
                   "positions": "max_position_embeddings"}
    key_prefixes = ("distilbert.",)  # task models (DistilBertForMaskedLM) put the base model under "distilbert."
    default_architecture = "DistilBertModel"
    weights = (
        WeightMap("embed.tokens", "embeddings.word_embeddings.weight", ("vocab", H)),
        WeightMap("embed.positions", "embeddings.position_embeddings.weight", ("positions", H)),
        WeightMap("embed.norm.weight", "embeddings.LayerNorm.weight", (H,)),
        WeightMap("embed.norm.bias", "embeddings.LayerNorm.bias", (H,)),
        # a Linear [out, in] = [hidden, hidden] split per head: out -> (heads, head_dim)
        *(WeightMap(f"attn.{p}.weight", L + f"attention.{p}_lin.weight", (HEADS, HD, H)) for p in "qkv"),
        *(WeightMap(f"attn.{p}.bias", L + f"attention.{p}_lin.bias", (HEADS, HD)) for p in "qkv"),
        # the output projection's inputs are (heads, head_dim): two fan-in axes
        WeightMap("attn.o.weight", L + "attention.out_lin.weight", (H, HEADS, HD), fan_in=2),
        WeightMap("attn.o.bias", L + "attention.out_lin.bias", (H,)),
        WeightMap("attn.norm.weight", L + "sa_layer_norm.weight", (H,)),
        WeightMap("attn.norm.bias", L + "sa_layer_norm.bias", (H,)),
        WeightMap("mlp.up.weight", L + "ffn.lin1.weight", (FFN, H)),
        WeightMap("mlp.up.bias", L + "ffn.lin1.bias", (FFN,)),
        WeightMap("mlp.down.weight", L + "ffn.lin2.weight", (H, FFN)),
        WeightMap("mlp.down.bias", L + "ffn.lin2.bias", (H,)),
        WeightMap("mlp.norm.weight", L + "output_layer_norm.weight", (H,)),
        WeightMap("mlp.norm.bias", L + "output_layer_norm.bias", (H,)),
    )


@zoo.hookimpl
def register_architectures(register):
    register(DistilBertAdapter())
