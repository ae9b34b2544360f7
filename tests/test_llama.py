"""Llama-family adapter: SmolLM2-135M (GGUF Q4_1, real weights) end to end, the GQA query-to-KV mapping, and tiny
random Mistral / Qwen2 / Qwen3 / biased Llama checkpoints.

SmolLM2 is dequantized once per session (about 25 s): the learngene is added from the GGUF folder through the real
`resolve_source` hook, and a tee around the checkpoint's loader keeps that one dequantized state dict as the
reference the tests compare against.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import zoo
from zoo.cli import cli
from zoo_plugins.architectures import llama

TEXT = "The capital of France is Paris. It is known for the Eiffel Tower, museums and its cafes along the Seine."
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
NORMS = ("input_layernorm", "post_attention_layernorm")


# -- SmolLM2, loaded once ------------------------------------------------------------------------------------------
class _Tee:
    """Runs the real GGUF resolver and keeps what its loader returns, so one dequantization serves both the
    learngene and the reference model."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    @zoo.hookimpl(tryfirst=True)
    def resolve_source(self, source):
        checkpoint = llama.resolve_source(source=source)
        if checkpoint is not None:
            load = checkpoint.loader
            checkpoint.loader = lambda: self.state.update(load()) or self.state
        return checkpoint


@pytest.fixture(scope="session")
def smol(tmp_path_factory, smollm2_gguf):
    """(registry path, the dequantized source model, its tokenizer) for a keep=1 learngene named 'smol'."""
    folder = smollm2_gguf.parent
    registry = tmp_path_factory.mktemp("smol") / "registry.db"
    tee = _Tee()
    name = zoo.register_plugin(tee, name="test-gguf-tee")
    try:
        info = zoo.add_learngene(str(folder), transform="dct", keep=1.0, name="smol", registry=registry)  # the folder holding it
    finally:
        zoo.unregister_plugin(name)
    config = {k: v for k, v in info.source_config.items() if k not in ("model_type", "transformers_version")}
    reference = LlamaForCausalLM(LlamaConfig(**config))
    reference.load_state_dict(tee.state, assign=True)  # the dequantized tensors themselves, no second copy
    reference.tie_weights()
    reference.eval()
    tok_dir = tmp_path_factory.mktemp("smol-tokenizer")
    with zoo.open_registry(registry) as reg:
        for filename, data in reg.assets("smol").items():
            (tok_dir / filename).write_bytes(data)
    return registry, reference, AutoTokenizer.from_pretrained(tok_dir)


def _std(w: torch.Tensor) -> float:
    return w.detach().double().std(unbiased=False).item()


def _interpolated(values: list[float], layers: int) -> np.ndarray:
    return np.interp(np.linspace(0, len(values) - 1, layers), np.arange(len(values)), values)


def test_gguf_learngene_keeps_the_file_hash_the_layout_and_a_tokenizer(smol, smollm2_gguf):
    registry, reference, tokenizer = smol
    info = zoo.show_learngene("smol", registry=registry)
    gguf = smollm2_gguf
    assert info.family == "llama"
    assert info.source_sha256 == hashlib.sha256(gguf.read_bytes()).hexdigest()
    config = info.source_config
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["head_dim"]) == (30, 576, 9, 3, 64)
    assert config["tie_word_embeddings"] is True
    axes = {g["name"]: tuple(g["axes"]) for g in info.gene_summary}
    assert "lm_head.weight" not in axes  # tied: the token embeddings are the head
    assert axes["attn.q.weight"] == ("depth", "kv_heads", "q_per_kv", "head_dim", "hidden")
    assert axes["attn.k.weight"] == axes["attn.v.weight"] == ("depth", "kv_heads", "head_dim", "hidden")
    assert axes["attn.o.weight"] == ("depth", "hidden", "kv_heads", "q_per_kv", "head_dim")
    assert {axes[f"mlp.{p}.weight"] for p in ("gate", "up")} == {("depth", "ffn", "hidden")}
    assert axes["mlp.down.weight"] == ("depth", "hidden", "ffn")
    assert tokenizer("Paris")["input_ids"] and tokenizer.decode(tokenizer("Paris")["input_ids"]).strip() == "Paris"


def test_round_trip_on_smollm2_is_exact(smol):
    registry, reference, tokenizer = smol
    model = zoo.materialize("llama", learngene="smol", registry=registry, device="cpu")
    assert isinstance(model, LlamaForCausalLM)
    assert model.zoo_report["fresh_parameters"] == []
    ref_sd, got_sd = reference.state_dict(), model.state_dict()
    assert set(got_sd) == set(ref_sd)
    worst = max((got_sd[k] - v).abs().max().item() for k, v in ref_sd.items())
    assert worst <= 1e-5, worst
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    batch = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        want, got = reference(**batch).logits, model(**batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=5e-4)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1]:]).strip().startswith("Paris")


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--layers", "6", "--hidden", "384", "--heads", "6", "--kv-heads", "2"], (6, 384, 6, 2, 1024)),
        (["--layers", "12", "--hidden", "768", "--heads", "12", "--kv-heads", "4"], (12, 768, 12, 4, 2048)),
        (["--layers", "9"], (9, 576, 9, 3, 1536)),  # 30 -> 9 layers: no integer stride
    ],
    ids=["6x384-6/2", "12x768-12/4", "9-layers"],
)
def test_smollm2_resized_loads_generates_and_keeps_layer_statistics(smol, tmp_path, args, expected):
    registry, reference, tokenizer = smol
    out = tmp_path / "model"
    run = CliRunner().invoke(cli, ["materialize", "--arch", "llama", *args, "--out", str(out),
                                   "--registry", str(registry), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    assert "using learngene 'smol'" in run.output
    assert "left at init in this shallower model: final_norm.weight" in run.output  # every case is < 30 layers

    model = LlamaForCausalLM.from_pretrained(out).eval()
    layers, hidden, heads, kv_heads, ffn = expected
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.head_dim) == (layers, hidden, heads, kv_heads, ffn, 64)
    assert cfg.rope_parameters == reference.config.rope_parameters
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    attn = model.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (heads * 64, hidden)
    assert tuple(attn.k_proj.weight.shape) == (kv_heads * 64, hidden)

    tok = AutoTokenizer.from_pretrained(out)  # the GGUF's tokenizer travelled with the learngene
    prompt = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=20, min_new_tokens=20, do_sample=False)
        logits = model(**tok(TEXT, return_tensors="pt")).logits
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 20
    assert torch.isfinite(logits).all() and logits.std() > 0

    src, dst = reference.model.layers, model.model.layers
    for name in LINEARS:
        want = _interpolated([_std(src[i].get_submodule(name).weight) for i in range(len(src))], layers)
        got = [_std(dst[i].get_submodule(name).weight) for i in range(layers)]
        np.testing.assert_allclose(got, want, rtol=0.10, err_msg=name)
    for name in NORMS:
        want = _interpolated([src[i].get_submodule(name).weight.double().mean().item() for i in range(len(src))],
                             layers)
        got = [dst[i].get_submodule(name).weight.double().mean().item() for i in range(layers)]
        np.testing.assert_allclose(got, want, rtol=0.10, err_msg=name)
    assert _std(model.model.embed_tokens.weight) == pytest.approx(_std(reference.model.embed_tokens.weight), rel=0.1)


def _next_token_loss(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:]).item()


@pytest.mark.parametrize("strategy", ["spectral", "select"])
def test_a_shallower_smollm2_does_not_inherit_the_final_norm(smol, strategy):
    """SmolLM2's final RMSNorm gain (mean 1.8) is tuned for its 30th layer. On top of 6 layers it made every
    transfer confidently wrong (held-out loss 13.7 with select, 19.4 with the DCT, against ln(vocab) = 10.8 for a
    uniform guess). zoo leaves that gain at its init (ones) when the target is shallower, and keeps it otherwise."""
    registry, reference, tokenizer = smol
    sizes = dict(hidden=384, heads=6, kv_heads=2)
    shallow = zoo.materialize("llama", learngene="smol", layers=6, **sizes, registry=registry, device="cpu",
                              strategy=strategy)
    assert shallow.zoo_report["reset_genes"] == ["final_norm.weight"]
    assert "model.norm.weight" in shallow.zoo_report["fresh_parameters"]
    assert torch.equal(shallow.model.norm.weight, torch.ones(384))

    deep = zoo.materialize("llama", learngene="smol", **sizes, registry=registry, device="cpu", strategy=strategy)
    assert deep.zoo_report["reset_genes"] == []
    transferred = deep.model.norm.weight.detach().clone()
    assert transferred.mean().item() == pytest.approx(reference.model.norm.weight.mean().item(), rel=0.02)

    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    reset_loss = _next_token_loss(shallow, ids)
    with torch.no_grad():
        shallow.model.norm.weight.copy_(transferred)  # what zoo did before
    inherited_loss = _next_token_loss(shallow, ids)
    assert inherited_loss - reset_loss > 1.0, (reset_loss, inherited_loss)
    if strategy == "select":  # the first 6 layers exactly: no worse than a uniform guess
        assert reset_loss < math.log(shallow.config.vocab_size), reset_loss


# -- target configs --------------------------------------------------------------------------------------------------
def _smol_like(**overrides) -> dict:
    base = dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    return LlamaConfig(**{**base, **overrides}).to_dict()


def _sizes(config: dict) -> tuple:
    return tuple(config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                     "num_key_value_heads", "head_dim", "intermediate_size"))


def test_target_config_keeps_head_size_and_group_size():
    adapter = zoo.catalog().architecture("llama")
    source = _smol_like()
    assert _sizes(adapter.target_config(source)) == (30, 576, 9, 3, 64, 1536)
    # width alone: head size kept (6 heads), 3 query heads per KV head kept (2 KV heads), ffn ratio kept
    assert _sizes(adapter.target_config(source, hidden=384)) == (30, 384, 6, 2, 64, 1024)
    assert _sizes(adapter.target_config(source, heads=6)) == (30, 576, 6, 2, 96, 1536)
    assert _sizes(adapter.target_config(source, head_dim=32)) == (30, 576, 18, 6, 32, 1536)
    assert _sizes(adapter.target_config(source, hidden=768, heads=12, kv_heads=4)) == (30, 768, 12, 4, 64, 2048)
    # an explicit head size wins even when heads x head_dim is not the width (Llama supports it)
    assert _sizes(adapter.target_config(source, heads=4, kv_heads=2, head_dim=64)) == (30, 576, 4, 2, 64, 1536)
    # transformers' LlamaConfig also wants heads to divide the width; Qwen2's does not
    qwen2 = zoo.catalog().architecture("qwen2")
    assert _sizes(qwen2.target_config(source, heads=5, kv_heads=1, head_dim=64)) == (30, 576, 5, 1, 64, 1536)
    target = adapter.target_config(source, layers=6, hidden=384)
    assert target["rope_parameters"] == source["rope_parameters"] and target["tie_word_embeddings"] is True
    # a source whose head size is set apart from its width keeps it
    qwen3_like = _smol_like(hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    assert _sizes(adapter.target_config(qwen3_like, hidden=512)) == (30, 512, 16, 8, 128, 768)


@pytest.mark.parametrize(
    "sizes,message",
    [
        (dict(hidden=400), "--hidden 400 does not fit the source's attention heads: its head size 64 does not divide "
                           "400 and neither do its 9 heads; pass --heads, one of: 1, 2, 4, 5, 8, 10,"),
        (dict(heads=8), "not a multiple of the source's 3 query heads per KV head; give --kv-heads (one of 1, 2, 4, 8)"),
        (dict(heads=6, kv_heads=4), "--kv-heads 4 does not divide --heads 6; valid: 1, 2, 3, 6"),
        (dict(positions=100), "cannot set --positions"),
        (dict(kv_heads=0), "--kv-heads must be at least 1"),
        (dict(heads=5, kv_heads=1, head_dim=64), "--heads 5 does not divide --hidden 576; head counts that divide it: 1, 2, 3, 4, 6, 8, 9,"),
    ],
)
def test_target_config_rejects_impossible_sizes(sizes, message):
    with pytest.raises(zoo.InvalidConfigError) as err:
        zoo.catalog().architecture("llama").target_config(_smol_like(), **sizes)
    assert message in str(err.value)


def test_per_frequency_rope_factors_pin_the_head_size():
    rope = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 32, "long_factor": [2.0] * 32,
            "original_max_position_embeddings": 4096}
    source = _smol_like()
    source["rope_parameters"] = rope
    adapter = zoo.catalog().architecture("llama")
    assert adapter.target_config(source, layers=4)["rope_parameters"] == rope
    with pytest.raises(zoo.InvalidConfigError, match="per-frequency factors for head size 64"):
        adapter.target_config(source, head_dim=32)


# -- GQA: a query head keeps the KV group its source position implies ----------------------------------------------
def _gqa_source(folder: Path, heads: int = 8, kv_heads: int = 4, head_dim: int = 8, hidden: int = 48) -> None:
    """Each KV group g has a random code c_g: k of group g is c_g, and every query head of group g is c_g plus a
    pattern shared by the same position j in every group. Heads are laid out as transformers computes them:
    query head h reads KV head h // (heads / kv_heads)."""
    torch.manual_seed(7)
    group = heads // kv_heads
    config = LlamaConfig(num_hidden_layers=2, hidden_size=hidden, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, head_dim=head_dim, intermediate_size=96, vocab_size=128,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            codes = torch.randn(kv_heads, head_dim, hidden)
            within = torch.randn(group, head_dim, hidden)
            q = torch.stack([codes[h // group] + 0.3 * within[h % group] for h in range(heads)])
            layer.self_attn.q_proj.weight.copy_(q.reshape(heads * head_dim, hidden))
            layer.self_attn.k_proj.weight.copy_(codes.reshape(kv_heads * head_dim, hidden))
    model.save_pretrained(folder)


@pytest.mark.parametrize("heads,kv_heads", [(12, 4), (4, 4), (6, 2), (4, 2), (12, 6)],
                         ids=["larger-groups", "one-query-per-group", "fewer-larger-groups", "fewer-groups",
                              "more-groups"])
def test_each_query_head_reads_the_kv_group_its_source_position_implies(tmp_path, heads, kv_heads):
    _gqa_source(tmp_path / "src")
    zoo.add_learngene(str(tmp_path / "src"), transform="dct", keep=1.0, name="gqa")
    model = zoo.materialize("llama", learngene="gqa", heads=heads, kv_heads=kv_heads, device="cpu")
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (
        heads, kv_heads, 8)  # the source sets its head size apart from its width (8 x 8 != 48): it is kept
    group = heads // kv_heads
    for layer in model.model.layers:
        q = layer.self_attn.q_proj.weight.reshape(heads, -1)
        k = layer.self_attn.k_proj.weight.reshape(kv_heads, -1)
        corr = torch.corrcoef(torch.cat([q, k]))[:heads, heads:]  # [query head, kv head]
        assert corr.argmax(dim=1).tolist() == [h // group for h in range(heads)], corr
        own = corr[torch.arange(heads), torch.arange(heads) // group]
        others = corr.masked_fill(torch.nn.functional.one_hot(torch.arange(heads) // group, kv_heads).bool(), -1)
        assert (own - others.max(dim=1).values).min() > 0.1, corr


# -- other families: tiny random checkpoints -----------------------------------------------------------------------
FAMILIES = {
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, dict(tie_word_embeddings=False)),  # q/k/v biases, untied head
    "mistral": (MistralForCausalLM, MistralConfig, dict(sliding_window=16, tie_word_embeddings=True)),
    "llama-biases": (LlamaForCausalLM, LlamaConfig, dict(attention_bias=True, mlp_bias=True,
                                                         tie_word_embeddings=False)),
    "qwen3": (Qwen3ForCausalLM, Qwen3Config, dict(head_dim=16, tie_word_embeddings=False)),  # q/k norms
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_family_round_trip_and_resize(tmp_path, perturbed_checkpoint, family):
    cls, config_cls, extra = FAMILIES[family]
    torch.manual_seed(3)
    config = config_cls(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=300, max_position_embeddings=128, **extra)
    source = cls(config)
    perturbed_checkpoint(source, folder=tmp_path / "src")  # biases and norm gains must not be constant
    source.eval()
    info = zoo.add_learngene(str(tmp_path / "src"), transform="dct", keep=1.0, name="tiny")
    assert info.family == family.split("-")[0]
    axes = {g["name"]: tuple(g["axes"]) for g in zoo.show_learngene("tiny").gene_summary}
    assert ("lm_head.weight" in axes) == (not config.tie_word_embeddings)
    if not config.tie_word_embeddings:
        assert axes["lm_head.weight"] == ("vocab", "hidden")
    if family != "mistral":
        assert axes["attn.q.bias" if family != "qwen3" else "attn.q_norm.weight"][1:] in (
            ("kv_heads", "q_per_kv", "head_dim"), ("head_dim",))

    same = zoo.materialize(None, learngene="tiny", device="cpu")
    assert type(same) is cls and same.zoo_report["fresh_parameters"] == []
    src_sd, got_sd = source.state_dict(), same.state_dict()
    assert set(got_sd) == set(src_sd)
    assert max((got_sd[k] - v).abs().max().item() for k, v in src_sd.items()) <= 1e-5
    tokens = torch.tensor([[1, 5, 77, 200, 3, 9]])
    with torch.no_grad():
        torch.testing.assert_close(same(tokens).logits, source(tokens).logits, rtol=0, atol=1e-4)

    out = tmp_path / "small"
    zoo.materialize(None, learngene="tiny", layers=2, hidden=32, heads=4, kv_heads=1, device="cpu", out=out)
    loaded = cls.from_pretrained(out).eval()
    assert (loaded.config.num_hidden_layers, loaded.config.num_key_value_heads) == (2, 1)
    if getattr(loaded.config, "layer_types", None) is not None:
        assert len(loaded.config.layer_types) == 2
    with torch.no_grad():
        assert torch.isfinite(loaded(tokens).logits).all()


# -- GGUF sources --------------------------------------------------------------------------------------------------
def test_gguf_source_is_a_file_or_the_folder_that_holds_one(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    assert llama.find_gguf(str(folder)) is None  # nothing to load: zoo's own resolver reports it
    (folder / "a.gguf").write_bytes(b"GGUF")
    assert llama.find_gguf(str(folder)) == folder / "a.gguf"
    assert llama.find_gguf(str(folder / "a.gguf")) == folder / "a.gguf"
    assert llama.find_gguf(str(tmp_path / "missing.gguf")) is None
    (folder / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(zoo.InvalidConfigError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        llama.find_gguf(str(folder))
    (folder / "model.safetensors").write_bytes(b"")  # a Hugging Face folder: not ours
    assert llama.find_gguf(str(folder)) is None
    (folder / "notes.txt").write_text("x")
    assert llama.find_gguf(str(folder / "notes.txt")) is None
