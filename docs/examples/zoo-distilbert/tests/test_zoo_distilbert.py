"""The plugin's own tests: zoo's contract checks (zoo.testing) on the DistilBERT adapter."""

from __future__ import annotations

import pytest
import torch

zoo_distilbert = pytest.importorskip("zoo_distilbert", reason="pip install -e docs/examples/zoo-distilbert")
from transformers import DistilBertConfig, DistilBertModel  # noqa: E402

from zoo.testing import check_adapter_round_trip, check_cli_lists, check_resize  # noqa: E402


def tiny_distilbert():
    return DistilBertModel(DistilBertConfig(n_layers=2, dim=32, n_heads=4, hidden_dim=64, vocab_size=100,
                                            max_position_embeddings=32))


def test_plugin_is_installed():
    row = check_cli_lists("distilbert", architectures=["distilbert"])
    assert row["source"] == f"zoo-distilbert {zoo_distilbert.__version__}"


def test_round_trip_is_exact():
    check_adapter_round_trip(zoo_distilbert.DistilBertAdapter(), tiny_distilbert)


@pytest.mark.parametrize("sizes", [dict(layers=3, hidden=48), dict(layers=1, hidden=16, heads=2, ffn=40)])
def test_resized_models_run(sizes):
    model = check_resize(zoo_distilbert.DistilBertAdapter(), tiny_distilbert, keep=0.5, **sizes)
    hidden = model(input_ids=torch.tensor([[1, 5, 7, 9]])).last_hidden_state
    assert hidden.shape == (1, 4, sizes["hidden"]) and torch.isfinite(hidden).all()


def test_zoo_finds_the_adapter_for_distilbert_checkpoints():
    import zoo

    assert zoo.catalog().architectures["distilbert"].plugin == "distilbert"
    assert type(zoo.catalog().architecture("distilbert")).__module__ == "zoo_distilbert"
