"""GPT-2 end to end on a small random checkpoint (no GPT-2 weights exist offline).

The source is a 4-layer, 64-wide GPT-2 whose parameters are all perturbed (LayerNorms and biases are not constant)
and whose q/k/v parts and layers have different scales, so a gene that mixes parts or layers shows up in the
statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

import zoo
from zoo.cli import cli

N_LAYER, N_EMBD, N_HEAD, VOCAB, N_POS = 4, 64, 4, 1000, 128
HEAD_DIM = N_EMBD // N_HEAD
FFN = 4 * N_EMBD
QKV_SCALE = (1.0, 2.0, 4.0)  # q, k, v thirds of c_attn get different scales
TOKENS = torch.tensor([[5, 17, 999, 0, 42, 311, 8, 77, 500, 123], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])


@pytest.fixture(scope="module")
def source_dir(perturbed_checkpoint) -> Path:
    torch.manual_seed(1234)
    config = GPT2Config(n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, vocab_size=VOCAB, n_positions=N_POS,
                        bos_token_id=0, eos_token_id=0)

    def scale_layers(model):
        for i, block in enumerate(model.transformer.h):
            block.mlp.c_fc.weight.mul_(1.0 + 0.5 * i)  # per-layer std grows with depth
            for part, scale in enumerate(QKV_SCALE):
                block.attn.c_attn.weight[:, part * N_EMBD:(part + 1) * N_EMBD].mul_(scale)

    return perturbed_checkpoint(GPT2LMHeadModel(config), "tiny-gpt2", edit=scale_layers)


@pytest.fixture(scope="module")
def source_model(source_dir) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(source_dir).eval()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, source_dir) -> Path:
    path = tmp_path_factory.mktemp("gpt2-reg") / "registry.db"
    info = zoo.add_learngene(str(source_dir), transform="dct", keep=1.0, name="gpt2-full", registry=path)
    assert info.family == "gpt2"
    assert info.keep == {"*": 1.0}
    return path


def _logits(model, tokens=TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def _layer_std(weight: torch.Tensor) -> float:
    return weight.detach().double().std(unbiased=False).item()


def _interpolated(values: list[float], layers: int) -> np.ndarray:
    """Source per-layer values at each target layer's relative depth (independent of zoo's implementation)."""
    return np.interp(np.linspace(0, len(values) - 1, layers), np.arange(len(values)), values)


# -- canonical genes -----------------------------------------------------------------------------------------------
def test_genome_splits_fused_qkv_and_undoes_conv1d(source_dir):
    adapter = zoo.catalog().architecture("gpt2")
    sd = load_file(str(source_dir / "model.safetensors"))
    config = json.loads((source_dir / "config.json").read_text())
    genome = adapter.to_genome(sd, config)

    for part, name in enumerate(("q", "k", "v")):
        weight, bias = genome[f"attn.{name}.weight"], genome[f"attn.{name}.bias"]
        assert weight.axes == ("depth", "heads", "head_dim", "hidden")
        assert tuple(weight.tensor.shape) == (N_LAYER, N_HEAD, HEAD_DIM, N_EMBD)
        assert tuple(bias.tensor.shape) == (N_LAYER, N_HEAD, HEAD_DIM)
        for i in range(N_LAYER):
            fused = sd[f"transformer.h.{i}.attn.c_attn.weight"]  # Conv1D: [in, 3 * out]
            expected = fused[:, part * N_EMBD:(part + 1) * N_EMBD].T.reshape(N_HEAD, HEAD_DIM, N_EMBD)
            assert torch.equal(weight.tensor[i], expected)
            expected_bias = sd[f"transformer.h.{i}.attn.c_attn.bias"][part * N_EMBD:(part + 1) * N_EMBD]
            assert torch.equal(bias.tensor[i], expected_bias.reshape(N_HEAD, HEAD_DIM))
    # the parts really differ (the fixture scales them 1:2:4)
    ratio = genome["attn.v.weight"].tensor.std() / genome["attn.q.weight"].tensor.std()
    assert 3.0 < ratio.item() < 5.0

    o = genome["attn.o.weight"]
    assert tuple(o.tensor.shape) == (N_LAYER, N_EMBD, N_HEAD, HEAD_DIM)
    assert torch.equal(o.tensor[2], sd["transformer.h.2.attn.c_proj.weight"].T.reshape(N_EMBD, N_HEAD, HEAD_DIM))
    up = genome["mlp.up.weight"]
    assert tuple(up.tensor.shape) == (N_LAYER, FFN, N_EMBD)
    assert torch.equal(up.tensor[1], sd["transformer.h.1.mlp.c_fc.weight"].T)
    assert torch.equal(genome["embed.tokens"].tensor, sd["transformer.wte.weight"])
    assert genome["embed.tokens"].axes == ("vocab", "hidden")

    # and back: from_genome rebuilds every checkpoint tensor exactly
    rebuilt = adapter.from_genome(genome, config, sd)
    assert set(rebuilt) == set(sd)
    for key, value in sd.items():
        assert torch.equal(rebuilt[key], value), key


# -- extract + materialize at the source size ----------------------------------------------------------------------
def test_round_trip_at_source_size_reproduces_the_model(registry, source_model, tmp_path):
    out = tmp_path / "same"
    model = zoo.materialize(None, learngene="gpt2-full", registry=registry, device="cpu", out=out)
    assert isinstance(model, GPT2LMHeadModel)
    assert not model.training
    assert model.zoo_report["learngene"] == "gpt2-full"
    assert model.zoo_report["family"] == "gpt2"
    assert model.zoo_report["fresh_parameters"] == []
    assert model.zoo_report["sizes"]["depth"] == N_LAYER and model.zoo_report["sizes"]["hidden"] == N_EMBD

    source_sd, target_sd = source_model.state_dict(), model.state_dict()
    assert set(target_sd) == set(source_sd)
    for key, value in source_sd.items():
        assert target_sd[key].shape == value.shape, key
        assert target_sd[key].dtype == value.dtype, key
        diff = (target_sd[key] - value).abs().max().item()
        assert diff <= 1e-5, f"{key}: max abs diff {diff}"
    torch.testing.assert_close(_logits(model), _logits(source_model), rtol=0, atol=1e-4)

    reloaded = GPT2LMHeadModel.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(reloaded), _logits(source_model), rtol=0, atol=1e-4)
    assert json.loads((out / "zoo.json").read_text())["learngene"] == "gpt2-full"


# -- other sizes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_sizes,expected",
    [
        # unset ffn keeps its ratio to the width (4x here)
        (dict(layers=2, hidden=32, heads=2), dict(n_layer=2, n_embd=32, n_head=2, n_inner=128)),
        (dict(layers=6, hidden=96, heads=6), dict(n_layer=6, n_embd=96, n_head=6, n_inner=384)),
        # heads unset: the head size (16) is kept, so 48 wide -> 3 heads
        (dict(layers=3, hidden=48), dict(n_layer=3, n_embd=48, n_head=3, n_inner=192)),
        # 40 is no multiple of the head size 16: the head count is kept and the head size becomes 10
        (dict(hidden=40), dict(n_layer=N_LAYER, n_embd=40, n_head=4, n_inner=160)),
        (dict(layers=2, hidden=32, heads=2, ffn=FFN), dict(n_layer=2, n_embd=32, n_head=2, n_inner=FFN)),
        (dict(ffn=100), dict(n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, n_inner=100)),
    ],
    ids=["smaller", "larger", "keep-head-dim", "keep-heads", "explicit-ffn", "ffn"],
)
def test_materialize_other_sizes_saves_a_loadable_model(registry, source_model, tmp_path, request_sizes, expected):
    out = tmp_path / "model"
    model = zoo.materialize("gpt2", learngene="gpt2-full", registry=registry, device="cpu", out=out, **request_sizes)
    assert model.zoo_report["fresh_parameters"] == []
    assert (out / "config.json").is_file() and (out / "zoo.json").is_file()

    loaded = GPT2LMHeadModel.from_pretrained(out).eval()
    for key, value in expected.items():
        assert getattr(loaded.config, key) == value, key
    assert loaded.config.vocab_size == VOCAB and loaded.config.n_positions == N_POS
    assert len(loaded.transformer.h) == expected["n_layer"]
    hidden, inner = expected["n_embd"], expected["n_inner"]
    block = loaded.transformer.h[0]
    assert tuple(block.attn.c_attn.weight.shape) == (hidden, 3 * hidden)
    assert tuple(block.mlp.c_fc.weight.shape) == (hidden, inner)
    assert tuple(loaded.transformer.wte.weight.shape) == (VOCAB, hidden)

    logits = _logits(loaded)
    assert logits.shape == (*TOKENS.shape, VOCAB)
    assert torch.isfinite(logits).all()
    assert logits.std() > 0
    # what was saved is what materialize returned
    torch.testing.assert_close(logits, _logits(model), rtol=0, atol=1e-5)

    # lm_head stays tied to the token embeddings, in memory and after loading
    for m in (model, loaded):
        assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()

    # the token embeddings keep the source's statistics (vocab is never resized)
    src_wte = source_model.transformer.wte.weight
    assert _layer_std(loaded.transformer.wte.weight) == pytest.approx(_layer_std(src_wte), rel=1e-3)
    if hidden == N_EMBD:  # nothing about the embeddings changed: they are the source's
        torch.testing.assert_close(loaded.transformer.wte.weight, src_wte, rtol=0, atol=1e-5)


def test_heads_that_do_not_divide_the_width_are_rejected(registry, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(zoo.InvalidConfigError, match="does not divide"):
        zoo.materialize("gpt2", registry=registry, hidden=50, device="cpu", out=out)
    with pytest.raises(zoo.InvalidConfigError, match="does not divide"):
        zoo.materialize("gpt2", registry=registry, hidden=64, heads=5, device="cpu", out=out)
    assert not out.exists()


# -- statistics ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_sizes",
    [dict(layers=6, hidden=96, heads=6), dict(layers=2, hidden=32, heads=2), dict(layers=7, hidden=48)],
    ids=["larger", "smaller", "deeper-narrower"],
)
def test_per_layer_statistics_follow_the_source(registry, source_model, request_sizes):
    model = zoo.materialize("gpt2", learngene="gpt2-full", registry=registry, device="cpu", **request_sizes)
    layers = request_sizes["layers"]
    hidden = request_sizes["hidden"]
    src_blocks, dst_blocks = source_model.transformer.h, model.transformer.h
    assert len(dst_blocks) == layers

    fc_src = [_layer_std(b.mlp.c_fc.weight) for b in src_blocks]
    assert fc_src[-1] > 2 * fc_src[0]  # the fixture's depth trend is there to be followed
    fc_want = _interpolated(fc_src, layers)
    fc_got = np.array([_layer_std(b.mlp.c_fc.weight) for b in dst_blocks])
    np.testing.assert_allclose(fc_got, fc_want, rtol=0.10)

    fc_mean_want = _interpolated([b.mlp.c_fc.weight.double().mean().item() for b in src_blocks], layers)
    fc_mean_got = np.array([b.mlp.c_fc.weight.double().mean().item() for b in dst_blocks])
    np.testing.assert_allclose(fc_mean_got, fc_mean_want, atol=0.1 * fc_want.min())

    # q, k and v are separate genes: each third of the fused c_attn keeps its own scale
    for part in range(3):
        src = [_layer_std(b.attn.c_attn.weight[:, part * N_EMBD:(part + 1) * N_EMBD]) for b in src_blocks]
        got = [_layer_std(b.attn.c_attn.weight[:, part * hidden:(part + 1) * hidden]) for b in dst_blocks]
        np.testing.assert_allclose(got, _interpolated(src, layers), rtol=0.10, err_msg=f"c_attn part {part}")

    # LayerNorm gains are not constant in the source, and keep their per-layer mean
    ln_src = [b.ln_1.weight.double().mean().item() for b in src_blocks]
    ln_got = [b.ln_1.weight.double().mean().item() for b in dst_blocks]
    np.testing.assert_allclose(ln_got, _interpolated(ln_src, layers), atol=1e-4)
    assert all(b.ln_1.weight.std() > 0.01 for b in dst_blocks)

    # layers are distinct blends, never copies of one another
    for a, b in zip(dst_blocks, list(dst_blocks)[1:]):
        assert not torch.allclose(a.mlp.c_fc.weight, b.mlp.c_fc.weight)


# -- names -----------------------------------------------------------------------------------------------------------
def test_gpt_alias_resolves_to_gpt2(registry, source_model):
    cat = zoo.catalog()
    assert cat.architecture("gpt") is cat.architecture("gpt2")
    model = zoo.materialize("gpt", registry=registry, layers=2, device="cpu")  # newest gpt2 learngene
    assert isinstance(model, GPT2LMHeadModel)
    assert model.zoo_report["family"] == "gpt2"
    assert model.zoo_report["learngene"] == "gpt2-full"
    assert model.config.n_layer == 2 and model.config.n_embd == N_EMBD
    torch.testing.assert_close(model.transformer.wpe.weight, source_model.transformer.wpe.weight, rtol=0, atol=1e-5)
    # the alias also passes the family check when the learngene is named
    assert zoo.materialize("gpt", learngene="gpt2-full", registry=registry, device="cpu").config.n_layer == N_LAYER
    with pytest.raises(zoo.InvalidConfigError):
        zoo.materialize("bert", learngene="gpt2-full", registry=registry, device="cpu")


# -- command line ----------------------------------------------------------------------------------------------------
def test_cli_add_then_materialize(source_dir, source_model, tmp_path):
    runner = CliRunner()
    reg = str(tmp_path / "cli-registry.db")
    out = tmp_path / "cli-out"

    added = runner.invoke(cli, ["learngene", "add", str(source_dir), "--keep", "1", "--name", "g", "--registry", reg])
    assert added.exit_code == 0, added.output
    assert "added learngene 'g'" in added.output and "gpt2" in added.output
    info = zoo.show_learngene("g", registry=reg)
    assert info.family == "gpt2" and info.keep == {"*": 1.0}

    made = runner.invoke(cli, ["materialize", "--arch", "gpt", "--layers", "2", "--out", str(out), "--registry", reg,
                               "--device", "cpu"])
    assert made.exit_code == 0, made.output
    assert "using learngene 'g'" in made.output

    loaded = GPT2LMHeadModel.from_pretrained(out).eval()
    assert loaded.config.n_layer == 2 and loaded.config.n_embd == N_EMBD and loaded.config.n_head == N_HEAD
    torch.testing.assert_close(loaded.transformer.wte.weight, source_model.transformer.wte.weight, rtol=0, atol=1e-5)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    logits = _logits(loaded)
    assert logits.shape == (*TOKENS.shape, VOCAB) and torch.isfinite(logits).all()

    bad = runner.invoke(cli, ["materialize", "--arch", "gpt", "--hidden", "50", "--out", str(tmp_path / "x"),
                              "--registry", reg, "--device", "cpu"])
    assert bad.exit_code == 1
    assert "does not divide" in bad.output
