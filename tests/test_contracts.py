"""The plugin contracts, checked with zoo.testing over everything the catalog registers: every architecture adapter
(a tiny random model of its family: an exact round trip at keep 1, then one more layer and one more head, or key/value
group, with per-layer statistics kept), every transform (inverse, lengths, linearity per fiber) and every resize
strategy (with the transform it serves). A built-in adapter without a tiny model below fails; an adapter another
installed package registers is that package's to test (the example plugin's tests do it), so it is skipped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import zoo
from zoo.plugin_host import plugin_sources
from zoo.testing import check_adapter_round_trip, check_resize, check_resize_strategy, check_transform_inverse

CATALOG = zoo.catalog()
TINY_LM = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, intermediate_size=64, max_position_embeddings=64)
TINY_GQA = dict(TINY_LM, num_attention_heads=4, num_key_value_heads=2)  # 2 query heads per key/value head


def _model(model_class: str, config_class: str, **config: Any) -> Callable[[], Any]:
    def factory() -> Any:
        import transformers

        return getattr(transformers, model_class)(getattr(transformers, config_class)(**config))

    return factory


# adapter name -> a factory of a tiny random model of the family (built when the test runs)
FACTORIES: dict[str, Callable[[], Any]] = {
    "bert": _model("BertModel", "BertConfig", **dict(TINY_LM, max_position_embeddings=32), num_attention_heads=2,
                   type_vocab_size=2),
    "gpt2": _model("GPT2LMHeadModel", "GPT2Config", n_layer=2, n_embd=32, n_head=2, vocab_size=96, n_positions=32),
    "llama": _model("LlamaForCausalLM", "LlamaConfig", **TINY_GQA),
    "mistral": _model("MistralForCausalLM", "MistralConfig", **TINY_GQA),
    "qwen2": _model("Qwen2ForCausalLM", "Qwen2Config", **TINY_GQA),
    "qwen3": _model("Qwen3ForCausalLM", "Qwen3Config", **TINY_GQA, head_dim=8),
    # transformers' ViT; timm's layouts of the same family are checked in test_vision.py
    "vit": _model("ViTModel", "ViTConfig", hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                  intermediate_size=96, image_size=32, patch_size=8),
}


def _adapter(name: str) -> Any:
    entry = CATALOG.architectures[name]
    if name not in FACTORIES:
        if plugin_sources.get(entry.plugin) == "builtin":
            pytest.fail(f"built-in adapter '{name}' has no tiny model in tests/test_contracts.py FACTORIES")
        pytest.skip(f"adapter '{name}' comes from plugin '{entry.plugin}', which tests it itself")
    return entry.obj


@pytest.mark.parametrize("name", sorted(CATALOG.architectures))
def test_adapter_round_trips(name):
    check_adapter_round_trip(_adapter(name), FACTORIES[name])


@pytest.mark.parametrize("name", sorted(CATALOG.architectures))
def test_adapter_resizes(name):
    check_resize(_adapter(name), FACTORIES[name])


def test_every_built_in_adapter_has_a_tiny_model():
    built_in = {n for n, e in CATALOG.architectures.items() if plugin_sources.get(e.plugin) == "builtin"}
    assert {"bert", "gpt2", "llama", "mistral", "qwen2", "qwen3", "vit"} <= built_in
    assert sorted(built_in - set(FACTORIES)) == []


@pytest.mark.parametrize("name", sorted(CATALOG.transforms))
def test_transform_contract(name):
    check_transform_inverse(name)


def _served_by(strategy: str) -> str:
    """The transform a strategy is checked with: the one whose default it is, else the DCT."""
    return next((n for n, e in CATALOG.transforms.items() if getattr(e.obj, "default_strategy", None) == strategy),
                "dct")


@pytest.mark.parametrize("strategy,transform", [(s, _served_by(s)) for s in sorted(CATALOG.resize_strategies)])
def test_resize_strategy_contract(strategy, transform):
    check_resize_strategy(strategy, transform=transform)


def test_every_strategy_is_checked():
    assert {"spectral", "wavelet", "select", "duplicate", "ordered"} <= set(CATALOG.resize_strategies)
    assert {"dct", "dwt", "ordered"} <= set(CATALOG.transforms)
