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
    assert starts == {f"{HEAD}.weight": "identity", f"{HEAD}.bias": "zeros", "cls.predictions.bias": "zeros"}
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
