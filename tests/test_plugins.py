"""The plugin system: a plugin registered at run time adds an architecture the CLI then uses; conflicts are
errors naming both plugins; a broken installed plugin is reported and the rest keeps working."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest
import torch
from click.testing import CliRunner
from transformers import DistilBertConfig, DistilBertModel

import zoo
from zoo.adapters import TransformersAdapter, WeightMap
from zoo.cli import cli

H, HEADS, HD, FFN = "hidden", "heads", "head_dim", "ffn"
L = "transformer.layer.{i}."


class DistilBertAdapter(TransformersAdapter):
    """What a third-party plugin author writes: one class listing where each weight lives."""

    name = "distilbert"
    model_types = ("distilbert",)
    config_keys = {"depth": "n_layers", H: "dim", HEADS: "n_heads", FFN: "hidden_dim", "vocab": "vocab_size",
                   "positions": "max_position_embeddings"}
    key_prefixes = ("distilbert.",)
    default_architecture = "DistilBertModel"
    weights = (
        WeightMap("embed.tokens", "embeddings.word_embeddings.weight", ("vocab", H)),
        WeightMap("embed.positions", "embeddings.position_embeddings.weight", ("positions", H)),
        WeightMap("embed.norm.weight", "embeddings.LayerNorm.weight", (H,)),
        WeightMap("embed.norm.bias", "embeddings.LayerNorm.bias", (H,)),
        *(WeightMap(f"attn.{p}.weight", L + f"attention.{p}_lin.weight", (HEADS, HD, H)) for p in "qkv"),
        *(WeightMap(f"attn.{p}.bias", L + f"attention.{p}_lin.bias", (HEADS, HD)) for p in "qkv"),
        WeightMap("attn.o.weight", L + "attention.out_lin.weight", (H, HEADS, HD), fan_in=2),
        WeightMap("attn.o.bias", L + "attention.out_lin.bias", (H,)),
        WeightMap("attn.norm.weight", L + "sa_layer_norm.weight", (H,)),
        WeightMap("attn.norm.bias", L + "sa_layer_norm.bias", (H,)),
        WeightMap("mlp.up.weight", L + "ffn.lin1.weight", (FFN, H)),
        WeightMap("mlp.up.bias", L + "ffn.lin1.bias", (FFN,)),
        WeightMap("mlp.down.weight", L + "ffn.lin2.weight", (H, FFN)),
        WeightMap("mlp.down.bias", L + "ffn.lin2.bias", (H,)),
        WeightMap("mlp.norm.weight", L + "output_layer_norm.weight", (H,)),
        WeightMap("mlp.norm.bias", L + "output_layer_norm.bias", (H,)),
    )


def make_plugin(adapter) -> types.ModuleType:
    module = types.ModuleType("zoo_test_plugin")

    @zoo.hookimpl
    def register_architectures(register):
        register(adapter)

    module.register_architectures = register_architectures
    return module


@pytest.fixture()
def distilbert_plugin():
    name = zoo.register_plugin(make_plugin(DistilBertAdapter()), name="test-distilbert")
    yield name
    zoo.unregister_plugin(name)


@pytest.fixture()
def distilbert_dir(tmp_path):
    torch.manual_seed(0)
    config = DistilBertConfig(n_layers=3, dim=64, n_heads=4, hidden_dim=128, vocab_size=500,
                              max_position_embeddings=64)
    model = DistilBertModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "distilbert")
    return tmp_path / "distilbert", model.eval()


def test_runtime_plugin_adds_an_architecture_the_cli_uses(distilbert_plugin, distilbert_dir, tmp_path):
    folder, source = distilbert_dir
    reg, out = tmp_path / "r.db", tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["learngene", "add", str(folder), "--keep", "1", "--name", "db", "--registry", str(reg)])
    assert result.exit_code == 0, result.output
    assert "(distilbert, dct" in result.output
    result = runner.invoke(cli, ["plugins", "--json"])
    assert '"test-distilbert"' in result.output and '"runtime"' in result.output
    # same size: exact; then a deeper, wider one that loads and runs
    result = runner.invoke(cli, ["materialize", "--arch", "distilbert", "--out", str(out), "--registry", str(reg)])
    assert result.exit_code == 0, result.output
    rebuilt = DistilBertModel.from_pretrained(out).state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(rebuilt[key], value, atol=1e-5, rtol=0)
    result = runner.invoke(cli, ["materialize", "--arch", "distilbert", "--layers", "5", "--hidden", "96",
                                 "--out", str(out), "--registry", str(reg)])
    assert result.exit_code == 0, result.output
    model = DistilBertModel.from_pretrained(out).eval()
    assert (model.config.n_layers, model.config.dim, model.config.n_heads) == (5, 96, 6)
    hidden = model(input_ids=torch.tensor([[1, 5, 7, 9]])).last_hidden_state
    assert hidden.shape == (1, 4, 96) and torch.isfinite(hidden).all()


def test_duplicate_names_are_an_error_naming_both_plugins():
    from zoo_plugins.bert import BertAdapter

    before = dict(zoo.catalog().architectures)
    with pytest.raises(zoo.DuplicateNameError, match="'bert' from plugin 'impostor' conflicts with plugin 'bert'"):
        zoo.register_plugin(make_plugin(BertAdapter()), name="impostor")
    assert zoo.catalog().architectures.keys() == before.keys()  # rejected whole
    assert zoo.catalog().architectures["bert"].plugin == "bert"


def test_explicit_replace_overrides():
    from zoo_plugins.bert import BertAdapter

    class Patched(BertAdapter):
        description = "patched"

    module = types.ModuleType("zoo_replace_plugin")

    @zoo.hookimpl
    def register_architectures(register):
        register(Patched(), replace=True)

    module.register_architectures = register_architectures
    name = zoo.register_plugin(module, name="patcher")
    try:
        assert zoo.catalog().architecture("bert").description == "patched"
    finally:
        zoo.unregister_plugin(name)
    assert zoo.catalog().architecture("bert").description != "patched"


def test_broken_installed_plugin_warns_and_cli_still_works(tmp_path):
    site = tmp_path / "site"
    dist = site / "zoo_broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo]\nbroken = zoo_module_that_does_not_exist\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(site)!r})
        from zoo.cli import main
        sys.argv = ["zoo", "plugins"]
        main()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "zoo plugin 'broken' failed to load" in result.stderr
    assert "broken       FAILED TO LOAD: ModuleNotFoundError" in result.stdout
    assert "architectures: bert" in result.stdout  # the built-ins still work


def test_disable_plugins_env(tmp_path):
    code = "from zoo.cli import main; import sys; sys.argv=['zoo','plugins','--json']; main()"
    env = {"ZOO_DISABLE_PLUGINS": "gpt2", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert '"gpt2"' not in result.stdout and '"bert"' in result.stdout
