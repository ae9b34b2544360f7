"""FRONT+ refinement: the spectral penalty (exact, differentiable) and `zoo refine` end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from zoo.cli import cli
from zoo.genes import Gene
from zoo.extraction import extract_gene, parse_keep
from zoo.refine import (
    LearngeneSpec,
    energy_in_block,
    gene_fractions,
    genome_penalty,
    spectral_penalty,
)

DCT = LearngeneSpec("dct", 0.5)
DWT_SPECS = [LearngeneSpec("dwt", 0.5), LearngeneSpec("dwt", 0.5, {"wavelet": "db2", "mode": "symmetric"})]


def _genome(x: torch.Tensor, axes=("depth", "hidden", "ffn")) -> dict[str, Gene]:
    return {"w": Gene("w", x, axes)}


@pytest.mark.parametrize("spec", [DCT, *DWT_SPECS], ids=["dct", "dwt-haar", "dwt-db2-symmetric"])
def test_penalty_gradient_matches_finite_differences(spec):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)  # odd axes: DWT periodization pads them
    assert torch.autograd.gradcheck(lambda t: genome_penalty(_genome(t), spec), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", [DCT, *DWT_SPECS], ids=["dct", "dwt-haar", "dwt-db2-symmetric"])
def test_penalty_is_zero_with_zero_gradient_when_nothing_lies_outside(spec):
    """A weight made of the transform's own kept basis vectors (its projection onto the block) has no energy
    outside: the value and the gradient are zero."""
    transform, _, params = spec.resolved()
    torch.manual_seed(1)
    z = torch.randn(8, 6, dtype=torch.float64)
    projections = []
    for dim in range(2):  # the projection onto the row space of each axis' analysis operator
        a = transform.analyze(torch.eye(z.shape[dim], dtype=torch.float64), 0, -(-z.shape[dim] // 2), **params)
        projections.append(a.T @ torch.linalg.pinv(a @ a.T) @ a)
    for _ in range(500):  # alternate projections: inside the block *and* zero-mean, so the z-score keeps it there
        for dim, p in enumerate(projections):
            z = zoo.transforms.apply_matrix(z, p, dim)
        z = z - z.mean()
    w = (z * 0.02 + 0.1).requires_grad_(True)  # a weight's scale and offset: the z-score removes them again
    value = genome_penalty(_genome(w, ("hidden", "ffn")), spec)
    (grad,) = torch.autograd.grad(value, w)
    assert abs(value.item()) < 1e-12
    assert grad.abs().max().item() < 1e-9
    noisy = w.detach() + 0.02 * torch.randn_like(w)  # the same weight plus noise does have energy outside
    assert genome_penalty(_genome(noisy, ("hidden", "ffn")), spec).item() > 0.1


def test_dct_penalty_equals_the_energy_extraction_drops():
    torch.manual_seed(2)
    x = torch.randn(3, 10, 7, dtype=torch.float64)
    gene = _genome(x)["w"]
    record = extract_gene(gene, zoo.catalog().transform("dct"), parse_keep(0.5), {}, dtype=torch.float64)
    kept = record.coeffs.square().sum().item() / x.numel()  # z-scored per layer: total energy = element count
    assert genome_penalty(_genome(x), DCT).item() == pytest.approx(1 - kept, abs=1e-12)


def test_dwt_penalty_equals_the_orthonormal_detail_energy():
    """Haar, periodization, level 1 on both axes: the energy outside is exactly pywt's detail coefficients'."""
    pywt = pytest.importorskip("pywt")
    torch.manual_seed(3)
    x = torch.randn(8, 12, dtype=torch.float64)
    z = (x - x.mean()) / x.std(correction=0)
    coeffs = pywt.wavedecn(z.numpy(), "haar", mode="periodization", level=1)
    details = sum(float((d**2).sum()) for level in coeffs[1:] for d in level.values())
    value = genome_penalty(_genome(x, ("hidden", "ffn")), LearngeneSpec("dwt", 0.5))
    assert value.item() == pytest.approx(details / float((z**2).sum()), abs=1e-12)


def test_genes_kept_whole_are_left_out():
    x = torch.randn(5, 4, dtype=torch.float64)
    genome = {"emb": Gene("emb", x, ("vocab", "hidden")), "ln": Gene("ln", torch.randn(4), ("hidden",))}
    transform, keep, params = LearngeneSpec("dct", "hidden=1").resolved()
    assert gene_fractions(genome, transform, keep, params) == {}
    assert genome_penalty(genome, LearngeneSpec("dct", "hidden=1")).item() == 0.0
    # a constant gene (a fresh LayerNorm) has no energy to place: it is left out, not counted as all inside
    genome["fresh_norm"] = Gene("fresh_norm", torch.ones(3, 8), ("depth", "hidden"))
    transform, keep, params = DCT.resolved()
    assert set(gene_fractions(genome, transform, keep, params)) == {"emb", "ln"}


def test_penalty_alone_is_lowered_by_an_optimizer(tiny_bert_dir):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert_dir)
    start = spectral_penalty(model, DCT).item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        penalty = spectral_penalty(model, DCT)
        assert penalty.device == next(model.parameters()).device and penalty.dim() == 0
        opt.zero_grad()
        penalty.backward()
        opt.step()
    end = spectral_penalty(model, DCT).item()
    assert end < 0.7 * start, (start, end)
    assert energy_in_block(model, DCT)["mean"] == pytest.approx(1 - end, abs=1e-6)


# -- zoo refine ------------------------------------------------------------------------------------------------------
@pytest.fixture()
def text_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(f"tok{(i * 7) % 91}" for i in range(2000)))
    return path


def _zoo(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_cli_refines_adds_parent_and_shows_lineage(tiny_bert_dir, text_file, tmp_path):
    res = _zoo("refine", str(tiny_bert_dir), "--data", str(text_file), "--steps", "3", "--seq", "16",
               "--lambda", "2")
    assert res.exit_code == 0, res.output
    assert "added learngene 'tiny-bert.dct.refined' (refined from 'tiny-bert.dct', lambda 2, 3 steps)" in res.output
    names = [i.name for i in zoo.list_learngenes()]
    assert names == ["tiny-bert.dct", "tiny-bert.dct.refined"]
    refined = zoo.show_learngene("tiny-bert.dct.refined")
    parent = zoo.show_learngene("tiny-bert.dct")
    assert refined.parent == "tiny-bert.dct" and parent.refinement is None
    assert refined.refinement["lambda"] == 2.0 and refined.refinement["steps"] == 3
    assert refined.refinement["task"] == "mlm" and refined.refinement["data"] == str(text_file.resolve())
    assert set(refined.refinement["energy_in_block"]) == {"before", "after"}
    assert refined.source_sha256 == parent.source_sha256 and refined.keep == parent.keep
    # the parent is the source's plain learngene: the same coefficients `zoo learngene add` extracts
    zoo.add_learngene(str(tiny_bert_dir), transform="dct", name="plain", keep=0.5)  # refine's default keep (zoo's is 1)
    with zoo.open_registry() as reg:
        plain, stored = reg.genes("plain"), reg.genes("tiny-bert.dct")
        changed = reg.genes("tiny-bert.dct.refined")
    assert all(plain[k].coeffs.shape == stored[k].coeffs.shape for k in stored)
    assert all(torch.allclose(plain[k].coeffs, stored[k].coeffs, rtol=0, atol=1e-6) for k in stored)
    assert any(not torch.equal(changed[k].coeffs, stored[k].coeffs) for k in changed)
    show = _zoo("learngene", "show", "tiny-bert.dct.refined")
    assert "lineage:    tiny-bert.dct.refined <- tiny-bert.dct" in show.output
    assert "refined:    FRONT+ lambda 2.0, 3 steps of mlm" in show.output and "in block:" in show.output
    # a second refine links to the existing parent instead of adding another; a refined child of a refined one
    res = _zoo("refine", str(tiny_bert_dir), "--data", str(text_file), "--steps", "2", "--seq", "16", "--name", "r2")
    assert res.exit_code == 0, res.output
    assert [i.name for i in zoo.list_learngenes()] == ["tiny-bert.dct", "tiny-bert.dct.refined", "plain", "r2"]
    assert zoo.show_learngene("r2").parent == "plain"  # the newest unrefined learngene of this checkpoint and spec
    model = zoo.materialize("bert", learngene="r2", layers=1, hidden=16, device="cpu")
    assert model.zoo_report["learngene"] == "r2"


def test_cli_refine_with_parent_uses_its_spec(tiny_bert_dir, text_file):
    zoo.add_learngene(str(tiny_bert_dir), name="base-dwt", transform="dwt", keep=0.5)
    res = _zoo("refine", str(tiny_bert_dir), "--data", str(text_file), "--steps", "2", "--seq", "16",
               "--parent", "base-dwt", "--name", "dwt-refined")
    assert res.exit_code == 0, res.output
    info = zoo.show_learngene("dwt-refined")
    assert info.parent == "base-dwt" and info.transform == "dwt" and info.transform_params["wavelet"] == "haar"


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be a whole number >= 1"),
    (["--lambda", "-1"], "--lambda must be a finite number >= 0"),
    (["--lambda", "nan"], "--lambda must be a finite number >= 0"),
    (["--transform", "fft"], "unknown transform 'fft'"),
    (["--keep", "2"], "must be in (0, 1]"),
    (["--keep", "1"], "keeps the whole spectrum, so there is nothing outside the block"),
    (["--parent", "nope"], "unknown learngene 'nope'"),
    (["--name", "bad name"], "invalid learngene name"),
    (["--data", "/no/such/corpus"], "--data '/no/such/corpus' does not exist; give a text file or folder"),
    (["--data", "EMPTY"], "holds no text"),
])
def test_bad_input_is_one_line_and_changes_nothing(tiny_bert_dir, text_file, tmp_path, args, message):
    zoo.add_learngene(str(tiny_bert_dir), name="existing")
    empty = tmp_path / "empty"
    empty.mkdir()
    base = {"--data": str(text_file), "--steps": "2", "--seq": "16"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = str(empty) if value == "EMPTY" else value
    res = _zoo("refine", str(tiny_bert_dir), *[x for kv in base.items() for x in kv])
    assert res.exit_code == 1, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert [i.name for i in zoo.list_learngenes()] == ["existing"]


def test_taken_names_and_foreign_parents_are_refused_before_training(tiny_bert_dir, text_file, tmp_path):
    from transformers import BertConfig, BertModel

    other = tmp_path / "other-bert"
    torch.manual_seed(5)
    BertModel(BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(other)
    zoo.add_learngene(str(other), name="foreign")
    zoo.add_learngene(str(tiny_bert_dir), name="mine")
    res = _zoo("refine", str(tiny_bert_dir), "--data", str(text_file), "--steps", "2", "--parent", "foreign")
    assert res.exit_code == 1 and "was extracted from another checkpoint" in res.output
    res = _zoo("refine", str(tiny_bert_dir), "--data", str(text_file), "--steps", "2", "--name", "mine")
    assert res.exit_code == 1 and "already has a learngene named 'mine'" in res.output
    assert [i.name for i in zoo.list_learngenes()] == ["foreign", "mine"]


def test_vit_data_must_be_a_class_folder(tmp_path):
    from zoo.refine_train import read_images

    (tmp_path / "only").mkdir()
    with pytest.raises(zoo.InvalidConfigError, match="one subfolder of images per class"):
        read_images(str(tmp_path), (28, 28))


def test_decoders_refine_with_causal_lm(tmp_path, text_file):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator([text_file.read_text()], trainers.BpeTrainer(vocab_size=120, special_tokens=["<|eos|>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=32,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(tmp_path / "tiny-gpt2")
    tokenizer.save_pretrained(tmp_path / "tiny-gpt2")
    res = _zoo("refine", str(tmp_path / "tiny-gpt2"), "--data", str(text_file), "--steps", "2", "--seq", "16")
    assert res.exit_code == 0, res.output
    refined = zoo.show_learngene("tiny-gpt2.dct.refined")
    assert refined.refinement["task"] == "clm" and refined.family == "gpt2"


def test_vit_refines_on_an_image_folder(tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import ViTConfig, ViTModel

    from zoo.refine_train import refine_learngene

    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=28, patch_size=14)).save_pretrained(tmp_path / "tiny-vit")
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "images" / label / f"{i}.png")
    refined, parent = refine_learngene(str(tmp_path / "tiny-vit"), data=str(tmp_path / "images"), steps=2, batch=4,
                                       progress=False)
    assert refined.refinement["task"] == "classify" and refined.parent == parent.name == "tiny-vit.dct"
    with zoo.open_registry() as reg:
        assert reg.genes(refined.name).keys() == reg.genes(parent.name).keys()  # no classifier head added
    with pytest.raises(zoo.InvalidConfigError, match="one subfolder of images per class"):
        refine_learngene(str(tmp_path / "tiny-vit"), data=str(tmp_path / "images" / "cat"), steps=1, name="x")


def test_ctrl_c_during_training_leaves_the_registry_unchanged(tiny_bert_dir, text_file, tmp_path):
    registry = tmp_path / "sigint.db"
    zoo.add_learngene(str(tiny_bert_dir), name="before", registry=registry)
    env = {**os.environ, "ZOO_REGISTRY": str(registry), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "from zoo.cli import main; main()", "refine", str(tiny_bert_dir), "--data",
           str(text_file), "--steps", "100000", "--seq", "16"]
    # SIG_DFL: a shell's background job inherits SIGINT ignored, and Python would keep ignoring it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    seen, deadline = b"", time.monotonic() + 120
    while b"step/s" not in seen and b"s/step" not in seen:  # training is under way (the bar has a rate)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, seen.decode()
        seen += os.read(proc.stderr.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (seen + err).decode()
    assert b"interrupted: nothing was added; the registry is unchanged" in err
    assert [i.name for i in zoo.list_learngenes(registry=registry)] == ["before"]
    assert _zoo("verify", "--registry", str(registry)).exit_code == 0


def test_refining_minilm_raises_the_energy_in_the_block(minilm_dir, tmp_path):
    """Real weights: a few steps of masked LM + penalty on pydoc prose move energy into the kept block."""
    from zoo.refine_train import pydoc_text, refine_model
    from zoo.resolver import resolve_checkpoint

    prose = tmp_path / "prose.txt"
    prose.write_text(pydoc_text()[:20000])  # a slice of the built-in corpus: tokenizing all of it takes seconds
    checkpoint = resolve_checkpoint(str(minilm_dir))
    adapter = zoo.catalog().architecture("bert")
    result = refine_model(checkpoint, adapter, DCT, data=str(prose), steps=3, lam=1.0, batch=2, seq=32,
                          progress=False)
    assert result.after["mean"] > result.before["mean"] + 0.005, (result.before, result.after)
    assert result.losses[-1][1] < result.losses[0][1]
    # the masked-LM model has no pooler: its genes are carried over unchanged, so the refined learngene is complete
    source = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    assert result.genome.keys() == source.keys()
    assert torch.equal(result.genome["pooler.weight"].tensor, source["pooler.weight"].tensor)
    assert not torch.equal(result.genome["attn.q.weight"].tensor, source["attn.q.weight"].tensor)
