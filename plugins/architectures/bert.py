"""BERT (``transformers.BertModel`` / ``BertForMaskedLM`` ...): attention weights split per head."""

from __future__ import annotations

from zoo import hookimpl
from zoo.hf import TransformersAdapter, WeightMap

H, HEADS, HD, FFN = "hidden", "heads", "head_dim", "ffn"
L = "encoder.layer.{i}."


class BertAdapter(TransformersAdapter):
    name = "bert"
    description = "BERT encoders (transformers BertModel, BertForMaskedLM, ...)"
    model_types = ("bert",)
    source_aliases = {
        "bert-base": "google-bert/bert-base-uncased",
        "bert-large": "google-bert/bert-large-uncased",
        "bert-base-uncased": "google-bert/bert-base-uncased",
        "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    }
    config_keys = {
        "depth": "num_hidden_layers",
        H: "hidden_size",
        HEADS: "num_attention_heads",
        FFN: "intermediate_size",
        "vocab": "vocab_size",
        "positions": "max_position_embeddings",
        "type_vocab": "type_vocab_size",
    }
    key_prefixes = ("bert.",)
    default_architecture = "BertModel"
    weights = (
        WeightMap("embed.tokens", "embeddings.word_embeddings.weight", ("vocab", H)),
        WeightMap("embed.positions", "embeddings.position_embeddings.weight", ("positions", H)),
        WeightMap("embed.token_types", "embeddings.token_type_embeddings.weight", ("type_vocab", H)),
        WeightMap("embed.norm.weight", "embeddings.LayerNorm.weight", (H,)),
        WeightMap("embed.norm.bias", "embeddings.LayerNorm.bias", (H,)),
        WeightMap("attn.q.weight", L + "attention.self.query.weight", (HEADS, HD, H)),
        WeightMap("attn.q.bias", L + "attention.self.query.bias", (HEADS, HD)),
        WeightMap("attn.k.weight", L + "attention.self.key.weight", (HEADS, HD, H)),
        WeightMap("attn.k.bias", L + "attention.self.key.bias", (HEADS, HD)),
        WeightMap("attn.v.weight", L + "attention.self.value.weight", (HEADS, HD, H)),
        WeightMap("attn.v.bias", L + "attention.self.value.bias", (HEADS, HD)),
        WeightMap("attn.o.weight", L + "attention.output.dense.weight", (H, HEADS, HD), fan_in=2),
        WeightMap("attn.o.bias", L + "attention.output.dense.bias", (H,)),
        WeightMap("attn.norm.weight", L + "attention.output.LayerNorm.weight", (H,)),
        WeightMap("attn.norm.bias", L + "attention.output.LayerNorm.bias", (H,)),
        WeightMap("mlp.up.weight", L + "intermediate.dense.weight", (FFN, H)),
        WeightMap("mlp.up.bias", L + "intermediate.dense.bias", (FFN,)),
        WeightMap("mlp.down.weight", L + "output.dense.weight", (H, FFN)),
        WeightMap("mlp.down.bias", L + "output.dense.bias", (H,)),
        WeightMap("mlp.norm.weight", L + "output.LayerNorm.weight", (H,)),
        WeightMap("mlp.norm.bias", L + "output.LayerNorm.bias", (H,)),
        WeightMap("pooler.weight", "pooler.dense.weight", (H, H), optional=True),
        WeightMap("pooler.bias", "pooler.dense.bias", (H,), optional=True),
        # masked-LM head (bert-base-uncased has one; its decoder is tied to the token embeddings). A source without
        # one (a sentence-transformers checkpoint) gives a head whose transform passes the stream through: the
        # tied decoder then reads tokens from the transferred stream at step 0 (docs/ablations.md measures it)
        WeightMap("mlm.dense.weight", "cls.predictions.transform.dense.weight", (H, H), optional=True,
                  absent="identity"),
        WeightMap("mlm.dense.bias", "cls.predictions.transform.dense.bias", (H,), optional=True, absent="zeros"),
        # a grown stream's copied channels would count once per copy in the tied decoder: the norm before it
        # divides them (docs/ablations.md, "The tied decoder of a grown BERT")
        WeightMap("mlm.norm.weight", "cls.predictions.transform.LayerNorm.weight", (H,), optional=True,
                  absent="per_copy"),
        WeightMap("mlm.norm.bias", "cls.predictions.transform.LayerNorm.bias", (H,), optional=True),
        WeightMap("mlm.bias", "cls.predictions.bias", ("vocab",), optional=True, absent="zeros"),
    )


@hookimpl
def register_architectures(register):
    register(BertAdapter())
