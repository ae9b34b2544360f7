"""BoT: the torch DWT against PyWavelets, the wavelet resize rule, and DWT learngenes end to end on MiniLM and a
small random GPT-2 (12 layers, so 12 -> 5 layers is a real case)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pywt = pytest.importorskip("pywt")
from click.testing import CliRunner  # noqa: E402
from transformers import AutoModel, BertModel, GPT2Config, GPT2LMHeadModel  # noqa: E402

import zoo  # noqa: E402
from zoo.cli import cli  # noqa: E402
from zoo.genes import resizable, shape_for  # noqa: E402
from zoo.materialization import interpolate_depth, materialize as materialize_genes  # noqa: E402
from zoo_plugins.transforms import dwt as D  # noqa: E402
import pywt_compat as W  # noqa: E402  (tests/pywt_compat.py: PyWavelets' functions in torch)

ATOL = 1e-5
WAVELETS = ("haar", "db2")
LENGTHS = (7, 8, 33)  # odd and even
TOKENS = torch.tensor([[5, 17, 999, 0, 42, 311, 8, 77, 500, 123]])


def _random(shape, seed=0, dtype=torch.float32):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float = ATOL) -> None:
    assert tuple(actual.shape) == tuple(expected.shape)
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=0, atol=atol)


# -- the torch DWT is PyWavelets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(D._LOW_PASS))
def test_built_in_filter_banks_are_pywavelets(name):
    expected = pywt.Wavelet(name).filter_bank
    got = D.filter_bank(name)
    for ours, theirs in zip((got.dec_lo, got.dec_hi, got.rec_lo, got.rec_hi), expected):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", D.MODES)
@pytest.mark.parametrize("n", (1, 2, 3, *LENGTHS))
def test_one_level_matches_pywt_in_every_mode(wavelet, mode, n):
    if mode == "reflect" and n == 1:
        pytest.skip("PyWavelets refuses length 1 in reflect mode")
    x = _random((3, n, 4), seed=n)
    ca, cd = pywt.dwt(x.double().numpy(), wavelet, mode=mode, axis=1)
    got_a, got_d = W.dwt(x, wavelet, mode, dim=1)
    _close(got_a, ca)
    _close(got_d, cd)
    ra, rd = _random(ca.shape, seed=1), _random(cd.shape, seed=2)
    _close(W.idwt(ra, rd, wavelet, mode, dim=1), pywt.idwt(ra.double().numpy(), rd.double().numpy(), wavelet, mode=mode, axis=1))
    _close(W.idwt(ra, None, wavelet, mode, dim=1), pywt.idwt(ra.double().numpy(), None, wavelet, mode=mode, axis=1))


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", ("periodization", "symmetric"))
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("level", (1, 2, 3))
def test_wavedec_and_waverec_match_pywt(wavelet, mode, n, level):
    x = _random((2, n, 3), seed=level)
    expected = pywt.wavedec(x.double().numpy(), wavelet, mode=mode, level=level, axis=1)
    got = W.wavedec(x, wavelet, mode, level, dim=1)
    assert len(got) == len(expected) == level + 1
    for ours, theirs in zip(got, expected):
        _close(ours, theirs)
    # inverse from arbitrary coefficients of the right shapes (not just a round trip)
    coeffs = [_random(c.shape, seed=10 + i) for i, c in enumerate(expected)]
    theirs = pywt.waverec([c.double().numpy() for c in coeffs], wavelet, mode=mode, axis=1)
    _close(W.waverec(coeffs, wavelet, mode, dim=1), theirs)
    _close(W.waverec(got, wavelet, mode, dim=1)[:, :n], x.double().numpy())  # and it is an inverse


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", ("periodization", "symmetric"))
@pytest.mark.parametrize("shape,level", [((6, 7, 8), 1), ((6, 7, 8), 2), ((5, 12, 33), 2)])
def test_wavedecn_and_waverecn_match_pywt(wavelet, mode, shape, level):
    x = _random(shape, seed=3)
    expected = pywt.wavedecn(x.double().numpy(), wavelet, mode=mode, level=level)
    got = W.wavedecn(x, wavelet, mode, level)
    _close(got[0], expected[0])
    for ours, theirs in zip(got[1:], expected[1:]):
        assert set(ours) == set(theirs)
        for key in theirs:
            _close(ours[key], theirs[key])
    coeffs = [_random(expected[0].shape, seed=4)] + [
        {key: _random(v.shape, seed=5 + i) for i, (key, v) in enumerate(sorted(d.items()))} for d in expected[1:]]
    theirs = pywt.waverecn([coeffs[0].double().numpy()] + [{k: v.double().numpy() for k, v in d.items()}
                                                            for d in coeffs[1:]], wavelet, mode=mode)
    _close(W.waverecn(coeffs, wavelet, mode), theirs)


def test_float64_is_computed_in_float64_and_inputs_are_untouched():
    x = _random((4, 33), seed=6, dtype=torch.float64)
    before = x.clone()
    ca, _ = W.dwt(x, "db2", "symmetric")
    assert ca.dtype == torch.float64
    np.testing.assert_allclose(ca.numpy(), pywt.dwt(x.numpy(), "db2", mode="symmetric")[0], rtol=0, atol=1e-13)
    assert torch.equal(x, before)


# -- learngene = approximation; the resize rule ------------------------------------------------------------------------
def test_learngene_is_the_pywt_approximation_without_its_gain():
    x = _random((6, 12, 33), seed=7)
    for level in (0, 1, 2):
        coeffs = x
        for dim in range(3):
            coeffs = D.DWT().analyze(coeffs, dim, keep=1, level=level)
        expected = pywt.wavedecn(x.double().numpy(), "haar", mode="periodization", level=level)[0] if level else x
        gain = math.sqrt(2) ** (3 * level)  # one sqrt(2) per axis per level
        _close(coeffs, np.asarray(expected, dtype=np.float64) / gain)


@pytest.mark.parametrize(
    "n,keep,level,lengths",
    [
        (384, 384, None, [384]),  # keep 1 = level 0
        (384, 192, None, [384, 192]),  # keep 0.5 = level 1
        (384, 96, None, [384, 192, 96]),
        (384, 100, None, [384, 192]),  # the deepest level that still keeps at least 100
        (6, 3, None, [6, 3]),
        (384, 384, 2, [384, 192, 96]),  # a level overrides keep
        (6, 6, 5, [6, 3, 2, 1]),  # and stops where the axis cannot shrink
        (7, 7, 1, [7, 4]),
    ],
)
def test_level_comes_from_keep_unless_given(n, keep, level, lengths):
    assert D.approximation_levels(n, "haar", "periodization", level=level, keep=keep) == lengths


@pytest.mark.parametrize(
    "src,dst,plan",
    [
        (6, 12, (1, 12)), (12, 6, (1, 12)),  # dyadic: pure wavelet steps
        (384, 1536, (2, 1536)), (384, 96, (2, 384)),
        (384, 512, (0, 384)),  # under one doubling: the DCT bridge only
        (6, 9, (0, 6)), (12, 5, (1, 10)),  # DCT crop 12 -> 10, then one approximation step
        (6, 13, (1, 12)),  # one inverse step to 12, DCT pad to 13
    ],
)
def test_resize_plan(src, dst, plan):
    assert D.resize_plan(src, dst, "haar", "periodization") == plan


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("mode", ("periodization", "symmetric"))
@pytest.mark.parametrize("src,dst", [(8, 16), (16, 8), (6, 9), (9, 6), (12, 5), (5, 12), (384, 512), (33, 7)])
def test_every_resize_keeps_a_constant_constant(wavelet, mode, src, dst):
    """The sqrt(2) per level (and the DCT bridge's sqrt(size ratio)) is divided out: no drift in magnitude."""
    out = D.DWT().synthesize(torch.full((src,), 3.0, dtype=torch.float64), 0, dst, wavelet=wavelet, mode=mode)
    assert out.shape == (dst,)
    np.testing.assert_allclose(out.numpy(), 3.0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("small,large", [(6, 12), (6, 9), (6, 13), (5, 12), (192, 512)])
def test_shrinking_undoes_growing(wavelet, small, large):
    """Periodized orthogonal wavelets and the DCT bridge are both exactly invertible this way round."""
    dwt, params = D.DWT(), dict(wavelet=wavelet, mode="periodization")
    x = _random((small, 3), seed=small, dtype=torch.float64)
    there_and_back = dwt.synthesize(dwt.synthesize(x, 0, large, **params), 0, small, **params)
    np.testing.assert_allclose(there_and_back.numpy(), x.numpy(), rtol=0, atol=1e-9)


def test_dyadic_steps_are_pure_wavelet_steps():
    x = _random((5, 16), seed=8, dtype=torch.float64)
    dwt = D.DWT()
    half = dwt.synthesize(x, 1, 8, wavelet="db2")
    expected = pywt.dwt(x.numpy(), "db2", mode="periodization")[0] / math.sqrt(2)
    _close(half, expected, atol=1e-12)
    double = dwt.synthesize(x, 1, 32, wavelet="db2")
    expected = pywt.idwt(x.numpy() * math.sqrt(2), None, "db2", mode="periodization")
    _close(double, expected, atol=1e-12)


@pytest.mark.parametrize("params", [{}, {"wavelet": "db2"}, {"wavelet": "db2", "mode": "symmetric"}])
def test_plugin_contracts(params):
    """zoo.testing's checks (a fixed --level opts out of "keep = axis length is lossless", so none is set here)."""
    from zoo.testing import check_resize_strategy, check_transform_inverse

    check_transform_inverse("dwt", params=params)
    check_resize_strategy("wavelet", transform="dwt", params=params)


def test_bad_parameters_are_one_clear_error():
    dwt = D.DWT()
    base = dict(dwt.parameters)
    with pytest.raises(zoo.UnknownNameError, match="unknown wavelet 'nope'; valid choices: .*db2.*haar"):
        dwt.validate_params({**base, "wavelet": "nope"})
    with pytest.raises(zoo.UnknownNameError, match="unknown wavelet mode 'smooth'; valid choices: .*periodization"):
        dwt.validate_params({**base, "mode": "smooth"})
    for level in (-1, "2", True, 1.5):
        with pytest.raises(zoo.InvalidConfigError, match="level must be a whole number"):
            dwt.validate_params({**base, "level": level})
    assert dwt.validate_params({**base, "wavelet": "sym4", "level": 3})["level"] == 3


# -- sources and registries ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_dir(perturbed_checkpoint) -> Path:
    """A 12-layer, 64-wide random GPT-2 whose layers differ in scale (so depth statistics mean something)."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=0,
                        eos_token_id=0)

    def scale_layers(model):
        for i, block in enumerate(model.transformer.h):
            block.mlp.c_fc.weight.mul_(1.0 + 0.2 * i)

    return perturbed_checkpoint(GPT2LMHeadModel(config), "tiny-gpt2", edit=scale_layers)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, minilm_dir, gpt2_dir) -> Path:
    """Level 0 (everything) and keep 0.5 (level 1) of both sources."""
    path = tmp_path_factory.mktemp("dwt-reg") / "registry.db"
    zoo.add_learngene(str(minilm_dir), transform="dwt", params={"level": 0}, name="bert-l0", registry=path)
    zoo.add_learngene(str(minilm_dir), transform="dwt", keep=0.5, name="bert-l1", registry=path)
    zoo.add_learngene(str(gpt2_dir), transform="dwt", params={"level": 0}, name="gpt2-l0", registry=path)
    return path


@pytest.fixture(scope="module")
def gpt2_model(gpt2_dir):
    return GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()


_LOADED: dict[tuple[str, str], tuple] = {}


def _records(registry, name):
    """A learngene's gene records and info, read once per registry (reading checks every gene's sha256)."""
    key = (str(registry), name)
    if key not in _LOADED:
        reg = zoo.open_registry(registry)
        try:
            _LOADED[key] = reg.genes(name), reg.get(name)
        finally:
            reg.close()
    return _LOADED[key]


def test_stored_learngene_is_the_level_approximation(registry):
    full, info = _records(registry, "bert-l0")
    half, half_info = _records(registry, "bert-l1")
    assert info.transform == "dwt" and info.transform_params == {"wavelet": "haar", "mode": "periodization", "level": 0}
    assert half_info.transform_params["level"] is None  # from --keep 0.5
    q0, q1 = full["attn.q.weight"], half["attn.q.weight"]
    assert tuple(q0.coeffs.shape) == (6, 12, 32, 384)  # level 0: everything
    assert tuple(q1.coeffs.shape) == (6 // 2, 12 // 2, 32 // 2, 384 // 2)
    assert tuple(half["embed.tokens"].coeffs.shape) == (30522, 192)  # the vocabulary axis is never decomposed
    expected = pywt.wavedecn(q0.coeffs.double().numpy(), "haar", mode="periodization", level=1)[0] / 4.0  # sqrt2^4
    _close(q1.coeffs, expected)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_level_zero_round_trip_is_exact(registry, minilm_model, gpt2_model, family):
    source = minilm_model if family == "bert" else gpt2_model
    model = zoo.materialize(learngene=f"{family}-l0", registry=registry, device="cpu")
    assert model.zoo_report["fresh_parameters"] == []
    expected, got = source.state_dict(), model.state_dict()
    assert set(expected) == set(got)
    worst = max((expected[k].float() - got[k].float()).abs().max().item() for k in expected)
    assert worst <= ATOL


def _scaled(sizes, factor, roles):
    return {role: (n * factor if factor >= 1 else n // int(1 / factor)) if role in roles else n
            for role, n in sizes.items()}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("factor", [0.5, 2])
def test_half_and_double_on_every_axis_are_approximation_and_zero_detail_inverse(registry, family, factor):
    """At the strategy level every resizable axis of every gene changes at once (heads, head size and width
    included); the result is exactly PyWavelets' approximation, or its inverse with zero details."""
    records, info = _records(registry, f"{family}-l0")
    adapter = zoo.catalog().architecture(info.family)
    sizes = _scaled(adapter.sizes(info.source_config), factor, {"depth", "hidden", "heads", "head_dim", "ffn"})
    strategy, transform = zoo.catalog().resize_strategy("wavelet"), zoo.catalog().transform("dwt")
    names = ["attn.q.weight", "attn.o.weight", "mlp.up.weight", "attn.norm.weight", "attn.q.bias", "embed.tokens"]
    if family == "bert" and factor > 1:  # PyWavelets would need seconds for MiniLM's big genes doubled in float64
        names = ["attn.q.bias", "attn.norm.weight"]
    for name in names:
        record = records[name]
        target = shape_for(record.axes, sizes)
        out = strategy.resize(record.coeffs, record.axes, target, transform, info.transform_params)
        assert tuple(out.shape) == target
        axes = [d for d, role in enumerate(record.axes) if resizable(role) and record.coeffs.shape[d] != target[d]]
        gain = math.sqrt(2) ** len(axes)
        z = record.coeffs.double().numpy()
        if factor < 1:
            expected = pywt.wavedecn(z, "haar", mode="periodization", level=1, axes=axes)[0] / gain
        else:
            expected = pywt.waverecn([z * gain, {}], "haar", mode="periodization", axes=axes)
        _close(out, expected)


@pytest.fixture(scope="module")
def source_genomes(minilm_model, gpt2_model):
    catalog = zoo.catalog()
    return {family: catalog.architecture(family).to_genome(model.state_dict(), model.config.to_dict())
            for family, model in (("bert", minilm_model), ("gpt2", gpt2_model))}


def _per_layer(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = tensor.double().reshape(tensor.shape[0], -1)
    return flat.mean(dim=1), flat.std(dim=1)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("case", ["half", "double", "more-heads", "fewer-heads"])
def test_resized_genes_have_the_expected_shapes_and_statistics(registry, source_genomes, family, case):
    """Every gene of a model resized 2x or 1/2x (depth, width, heads and ffn at once; the head size through the
    head count) has the target's shape, and each layer the source's mean and std at its relative depth."""
    records, info = _records(registry, f"{family}-l0")
    adapter = zoo.catalog().architecture(family)
    src = adapter.sizes(info.source_config)
    layers, hidden, heads, ffn = src["depth"], src["hidden"], src["heads"], src["ffn"]
    request = {
        "half": dict(layers=layers // 2, hidden=hidden // 2, heads=heads // 2, ffn=ffn // 2),
        "double": dict(layers=layers * 2, hidden=hidden * 2, heads=heads * 2, ffn=ffn * 2),
        "more-heads": dict(heads=heads * 2),  # head size halves
        "fewer-heads": dict(heads=heads // 2),  # head size doubles
    }[case]
    sizes = adapter.sizes(adapter.target_config(info.source_config, **request))
    want = {"depth": request.get("layers", layers), "hidden": request.get("hidden", hidden),
            "heads": request.get("heads", heads), "ffn": request.get("ffn", ffn)}
    assert {k: sizes[k] for k in want} == want and sizes["head_dim"] == want["hidden"] // want["heads"]
    catalog = zoo.catalog()
    with torch.no_grad():
        genome = materialize_genes(records, sizes, catalog.transform("dwt"), catalog.resize_strategy("wavelet"),
                                   info.transform_params)
    for name, gene in genome.items():
        source = source_genomes[family][name]
        assert tuple(gene.tensor.shape) == shape_for(gene.axes, sizes), name
        if not gene.stacked:
            src_mean, src_std = source.tensor.double().mean()[None], source.tensor.double().std()[None]
            mean, std = gene.tensor.double().mean()[None], gene.tensor.double().std()[None]
        else:
            (src_mean, src_std), (mean, std) = _per_layer(source.tensor), _per_layer(gene.tensor)
            src_mean, src_std = interpolate_depth(src_mean, want["depth"]), interpolate_depth(src_std, want["depth"])
        assert torch.all((std - src_std).abs() <= 0.10 * src_std + 1e-6), name
        assert torch.all((mean - src_mean).abs() <= 0.10 * src_std + 1e-6), name


@pytest.mark.parametrize(
    "family,learngene,request_sizes,expect",
    [
        ("bert", "bert-l0", dict(layers=9, hidden=512), dict(depth=9, hidden=512, heads=16)),  # 6 -> 9, 384 -> 512
        ("bert", "bert-l1", dict(layers=5, hidden=320), dict(depth=5, hidden=320, heads=10)),  # from 3 x 192 stored
        ("gpt2", "gpt2-l0", dict(layers=5, hidden=48), dict(depth=5, hidden=48, heads=3)),  # 12 -> 5, 64 -> 48
        ("gpt2", "gpt2-l0", dict(layers=18, hidden=96), dict(depth=18, hidden=96, heads=6)),  # 12 -> 18, 64 -> 96
    ],
    ids=["bert-up", "bert-from-level1", "gpt2-down", "gpt2-up"],
)
def test_non_dyadic_resizes_load_and_run(registry, tmp_path, family, learngene, request_sizes, expect):
    out = tmp_path / "model"
    zoo.materialize(family, learngene=learngene, registry=registry, device="cpu", out=out, **request_sizes)
    model = AutoModel.from_pretrained(out).eval() if family == "bert" else GPT2LMHeadModel.from_pretrained(out).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
        expect["depth"], expect["hidden"], expect["heads"])
    with torch.no_grad():
        hidden = model(TOKENS, output_hidden_states=True).hidden_states[-1]
    assert hidden.shape[-1] == expect["hidden"]
    assert torch.isfinite(hidden).all() and hidden.std() > 0


# -- streamed layer by layer (the strategy is separable) --------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_learngenes(tmp_path_factory, gpt2_dir) -> Path:
    """DWT learngenes of the GPT-2 alone (no real weights): every level, a longer filter, a padded mode."""
    path = tmp_path_factory.mktemp("dwt-stream") / "registry.db"
    for name, kwargs in [("l0", dict(params={"level": 0})), ("l1", dict(keep=0.5)), ("l2", dict(params={"level": 2})),
                         ("db2", dict(keep=0.5, params={"wavelet": "db2", "mode": "symmetric"}))]:
        zoo.add_learngene(str(gpt2_dir), transform="dwt", name=name, registry=path, **kwargs)
    return path


@pytest.mark.parametrize("learngene", ["l0", "l1", "l2", "db2"])
@pytest.mark.parametrize("sizes", [dict(layers=3, hidden=48, heads=3), dict(layers=5, hidden=48, heads=3),
                                   dict(layers=18, hidden=96, heads=6), dict(layers=8, hidden=128, heads=8),
                                   dict(layers=12), dict(layers=6, hidden=32)],
                         ids=["down", "down-more-layers", "up", "mixed", "same", "halved"])
@pytest.mark.parametrize("stats", ["restore", "fan_in", "none"])
def test_streamed_layers_equal_the_whole_gene(gpt2_learngenes, learngene, sizes, stats):
    """zoo.materialize(_to_disk) builds a wavelet target layer by layer (depth first, then each layer's axes); the
    whole-gene path (materialize_genes: non-streamable families, the testing kit) resizes every axis at once, in
    the strategy's shrink-first order. Each axis's operator depends on that axis alone, so the two agree: bit for
    bit where every step is a Haar step (halving or doubling), else up to float32 rounding (the order of the axes
    and the shapes the products run on differ; measured at most 7.5e-7 of the gene's largest value)."""
    from zoo.materialization import materialize_stream

    cat = zoo.catalog()
    strategy, transform = cat.resize_strategy("wavelet"), cat.transform("dwt")
    assert strategy.separable
    records, info = _records(gpt2_learngenes, learngene)
    adapter = cat.architecture("gpt2")
    target = adapter.sizes(adapter.target_config(info.source_config, **sizes))
    whole = materialize_genes(records, target, transform, strategy, info.transform_params, stats)
    layers: dict[str, dict] = {}
    for name, layer, tensor in materialize_stream(records, target, transform, strategy, info.transform_params, stats,
                                                  workers=2):
        layers.setdefault(name, {})[layer] = tensor
    assert set(layers) == set(whole)
    haar_steps = learngene != "db2" and sizes in (dict(layers=12), dict(layers=6, hidden=32))
    for name, want in whole.items():
        stacked = records[name].stacked
        assert (None not in layers[name]) == stacked, name  # stacked genes arrive one layer at a time
        got = torch.stack([layers[name][j] for j in range(len(layers[name]))]) if stacked else layers[name][None]
        assert got.shape == want.tensor.shape, name
        if haar_steps or not stacked:  # (a gene without depth is resized whole either way)
            assert torch.equal(got, want.tensor), name
        else:
            assert (got - want.tensor).abs().max() <= 2e-6 * want.tensor.abs().max(), name


# -- the CLI ---------------------------------------------------------------------------------------------------------
def _run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_dct_and_dwt_learngenes_coexist_and_build_the_same_architecture(minilm_dir, tmp_path):
    reg = tmp_path / "r.db"
    _run("learngene", "add", minilm_dir, "--transform", "dct", "--name", "m.dct", "--registry", reg)
    added = _run("learngene", "add", minilm_dir, "--transform", "dwt", "--wavelet", "haar", "--level", 1,
                 "--name", "m.dwt", "--registry", reg).output
    assert "added learngene 'm.dwt' (bert, dwt" in added
    rows = {line.split()[0]: line.split() for line in _run("learngene", "list", "--registry", reg).output.splitlines()}
    assert rows["m.dct"][3] == "dct" and rows["m.dwt"][3] == "dwt"  # the TRANSFORM column
    shown = json.loads(_run("learngene", "show", "m.dwt", "--json", "--registry", reg).output)
    assert shown["transform_params"] == {"wavelet": "haar", "mode": "periodization", "level": 1}
    assert {g["name"]: g["shape"] for g in shown["gene_summary"]}["attn.q.weight"] == [3, 6, 16, 192]

    configs, weights = {}, {}
    for name in ("m.dct", "m.dwt"):
        out = tmp_path / name
        _run("materialize", "--from", name, "--layers", 4, "--hidden", 192, "--device", "cpu", "--out", out,
             "--registry", reg)
        model = BertModel.from_pretrained(out)
        configs[name] = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_")}
        weights[name] = model.encoder.layer[0].intermediate.dense.weight
    assert configs["m.dct"] == configs["m.dwt"]
    assert (configs["m.dwt"]["num_hidden_layers"], configs["m.dwt"]["hidden_size"]) == (4, 192)
    assert weights["m.dct"].shape == weights["m.dwt"].shape and not torch.allclose(weights["m.dct"], weights["m.dwt"])
    # the wavelet strategy is for wavelet learngenes only
    refused = _run("materialize", "--from", "m.dct", "--strategy", "wavelet", "--out", tmp_path / "x", "--registry",
                   reg, ok=False)
    assert refused.exit_code == 1 and "needs a wavelet learngene (transform dwt), not 'dct'" in refused.output


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--transform", "dct", "--wavelet", "haar"], "transform 'dct' has no parameter 'wavelet'; valid: (none)"),
        (["--transform", "dwt", "--wavelet", "nope"], "unknown wavelet 'nope'; valid choices:"),
        (["--transform", "dwt", "--mode", "smooth"], "unknown wavelet mode 'smooth'; valid choices:"),
        (["--transform", "dwt", "--level", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_cli_rejects_bad_wavelet_options(minilm_dir, tmp_path, extra, message):
    result = _run("learngene", "add", minilm_dir, *extra, "--registry", tmp_path / "r.db", ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
