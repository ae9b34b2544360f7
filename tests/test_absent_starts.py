"""Parameters a learngene has no gene for start as their weight map says (``WeightMap.absent``): a BERT masked-LM
head grown on a headless source passes the stream through to the tied decoder, in memory and streamed to disk."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.hf import WeightMap
from zoo.errors import InvalidConfigError

HEAD = "cls.predictions.transform.dense"


@pytest.fixture()
def headless(tmp_path, tiny_bert_dir):
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), transform="dct", name="tiny", registry=registry)
    return registry


def test_headless_source_gives_an_identity_head(headless):
    model = zoo.materialize("bert", registry=headless, layers=2, hidden=24, heads=2,
                            options={"architecture": "BertForMaskedLM"})
    dense = dict(model.named_parameters())
    assert torch.equal(dense[f"{HEAD}.weight"], torch.eye(24))
    assert not dense[f"{HEAD}.bias"].any() and not dense["cls.predictions.bias"].any()
    starts = model.zoo_report["absent_starts"]
    assert starts == {f"{HEAD}.weight": "identity", f"{HEAD}.bias": "zeros", "cls.predictions.bias": "zeros",
                      "cls.predictions.transform.LayerNorm.weight": "per_copy"}
    assert set(starts) <= set(model.zoo_report["fresh_parameters"])
    # the decoder is tied to the transferred embeddings, so the head's logits are the stream read by them
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


def test_streamed_folder_matches_the_model_built_in_memory(headless, tmp_path):
    from safetensors.torch import load_file

    report = zoo.materialize_to_disk(tmp_path / "out", "bert", registry=headless, layers=2, hidden=24, heads=2,
                                     options={"architecture": "BertForMaskedLM"})
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(weights[f"{HEAD}.weight"], torch.eye(24))
    assert report["absent_starts"][f"{HEAD}.weight"] == "identity"
    assert json.loads((tmp_path / "out" / "zoo.json").read_text())["absent_starts"] == report["absent_starts"]
    in_memory = zoo.materialize("bert", registry=headless, layers=2, hidden=24, heads=2,
                                options={"architecture": "BertForMaskedLM"})
    for name, value in in_memory.state_dict().items():
        if name in weights:
            assert torch.equal(weights[name], value), name


def test_a_source_with_a_head_transfers_it(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    folder = tmp_path / "with-head"
    BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=32)).save_pretrained(folder)
    source = BertForMaskedLM.from_pretrained(folder)
    zoo.add_learngene(str(folder), transform="ordered", calibrate="none", name="h", registry=tmp_path / "r.db")
    model = zoo.materialize("bert", registry=tmp_path / "r.db", options={"architecture": "BertForMaskedLM"})
    assert model.zoo_report["absent_starts"] == {}
    assert torch.allclose(model.cls.predictions.transform.dense.weight, source.cls.predictions.transform.dense.weight,
                          atol=1e-6)


def test_random_init_is_untouched():
    """No learngene at all (the benchmarks' random init): the family's own init, identity nowhere."""
    adapter = zoo.catalog().architecture("bert")
    config = adapter.target_config({"model_type": "bert", "vocab_size": 64, "hidden_size": 32,
                                    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                                    "max_position_embeddings": 32, "architectures": ["BertForMaskedLM"]})
    model = adapter.build(config, {})
    assert not torch.equal(model.cls.predictions.transform.dense.weight, torch.eye(32))


def test_an_unknown_absent_init_names_the_valid_ones():
    with pytest.raises(InvalidConfigError, match="unknown absent init 'eye'; valid: identity, zeros"):
        WeightMap("x.weight", "x.weight", ("hidden", "hidden"), absent="eye")


def test_the_class_option_names_the_valid_classes(headless):
    from click.testing import CliRunner

    from zoo.cli import cli

    result = CliRunner().invoke(cli, ["materialize", "--arch", "bert", "--registry", str(headless), "--set",
                                       "architecture=GPT2LMHeadModel", "--dry-run"])
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    assert "architecture=GPT2LMHeadModel: not a transformers model class for bert; valid:" in line
    assert "BertForMaskedLM" in line and "BertModel" in line


# -- the masked-LM head's gain of a grown stream (per_copy) ------------------------------------------------------

GAIN = "cls.predictions.transform.LayerNorm.weight"
MLM = {"architecture": "BertForMaskedLM"}


def _copies(source: int, target: int) -> torch.Tensor:
    from zoo_plugins.strategies.baselines import duplicate_indices

    index = duplicate_indices(source, target)  # the even spread both growth rules copy channels by
    return torch.bincount(index)[index].float()


@pytest.fixture()
def ordered_headless(tmp_path, tiny_bert_dir):
    registry = tmp_path / "o.db"
    zoo.add_learngene(str(tiny_bert_dir), transform="ordered", calibrate="none", name="tiny", registry=registry)
    return registry


@pytest.mark.parametrize("strategy", ["ordered", "duplicate"])
def test_a_grown_headless_bert_divides_its_head_gain_by_copies(ordered_headless, tmp_path, strategy):
    """32 -> 48 channels: 16 are copied twice; the decoder tied to the embeddings would count them twice."""
    from safetensors.torch import load_file

    sizes = dict(layers=3, hidden=48, heads=3)
    model = zoo.materialize("bert", registry=ordered_headless, strategy=strategy, options=MLM, **sizes)
    gain = dict(model.named_parameters())[GAIN]
    copies = _copies(32, 48)
    assert set(copies.tolist()) == {1.0, 2.0}
    assert torch.equal(gain, 1.0 / copies)
    assert model.zoo_report["absent_starts"][GAIN] == "per_copy"
    zoo.materialize_to_disk(tmp_path / "out", "bert", registry=ordered_headless, strategy=strategy, options=MLM,
                            **sizes)
    weights = load_file(tmp_path / "out" / "model.safetensors")
    for name, value in model.state_dict().items():
        if name in weights:
            assert torch.equal(weights[name], value), name


@pytest.mark.parametrize("strategy,sizes", [
    ("ordered", dict(layers=1, hidden=24, heads=2)),  # shrinking: nothing is a copy
    ("select", dict(layers=1, hidden=24, heads=2)),
    ("ordered", dict(layers=3)),  # deeper only: copied layers, no copied channel
    ("spectral", dict(layers=3, hidden=48, heads=3)),  # a strategy without replicas
])
def test_no_copied_channel_leaves_the_head_gain_at_one(headless, ordered_headless, strategy, sizes):
    registry = headless if strategy == "spectral" else ordered_headless
    model = zoo.materialize("bert", registry=registry, strategy=strategy, options=MLM, **sizes)
    gain = dict(model.named_parameters())[GAIN]
    assert torch.equal(gain, torch.ones_like(gain))


@pytest.mark.parametrize("strategy", ["ordered", "duplicate"])
def test_a_grown_source_with_a_head_divides_its_gain_gene_by_copies(tmp_path, strategy):
    """The source's own head gain is copied with its channels, so the tied decoder would count them twice too."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForMaskedLM

    from zoo_plugins.strategies.baselines import duplicate_indices

    torch.manual_seed(0)
    folder = tmp_path / "with-head"
    source = BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=32))
    with torch.no_grad():
        source.cls.predictions.transform.LayerNorm.weight.uniform_(0.5, 1.5)
    source.save_pretrained(folder)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(folder), transform="ordered", calibrate="none", name="h", registry=registry)
    sizes = dict(layers=3, hidden=48, heads=3)
    model = zoo.materialize("bert", registry=registry, strategy=strategy, options=MLM, **sizes)
    want = source.cls.predictions.transform.LayerNorm.weight[duplicate_indices(32, 48)] / _copies(32, 48)
    assert GAIN not in model.zoo_report["absent_starts"]
    torch.testing.assert_close(dict(model.named_parameters())[GAIN], want)
    zoo.materialize_to_disk(tmp_path / "out", "bert", registry=registry, strategy=strategy, options=MLM, **sizes)
    torch.testing.assert_close(load_file(tmp_path / "out" / "model.safetensors")[GAIN], want)
