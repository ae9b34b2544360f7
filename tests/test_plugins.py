"""The plugin system: a plugin registered at run time adds an architecture the CLI then uses; the example plugin
(docs/examples/zoo-distilbert) works through its entry point alone; conflicts are errors naming both plugins; a
broken installed plugin is reported and the rest keeps working."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import DistilBertConfig, DistilBertModel

import zoo
from zoo.cli import cli

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "zoo-distilbert" / "zoo_distilbert.py"
EXAMPLE_INSTALLED = importlib.util.find_spec("zoo_distilbert") is not None


def _example_module() -> types.ModuleType:
    """The example plugin's module: installed, or read from its folder (then only registered at run time here)."""
    if EXAMPLE_INSTALLED:
        import zoo_distilbert

        return zoo_distilbert
    spec = importlib.util.spec_from_file_location("zoo_distilbert_uninstalled", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What a third-party plugin author writes: one class listing where each weight lives.
DistilBertAdapter = _example_module().DistilBertAdapter


def make_plugin(adapter, replace=False) -> types.ModuleType:
    module = types.ModuleType("zoo_test_plugin")

    @zoo.hookimpl
    def register_architectures(register):
        register(adapter, replace=replace)

    module.register_architectures = register_architectures
    return module


@pytest.fixture()
def distilbert_plugin():
    # replace=True: the installed example plugin may already register "distilbert"
    name = zoo.register_plugin(make_plugin(DistilBertAdapter(), replace=True), name="test-distilbert")
    yield name
    zoo.unregister_plugin(name)


@pytest.fixture()
def distilbert_dir(tmp_path, perturbed_checkpoint):
    torch.manual_seed(0)
    config = DistilBertConfig(n_layers=3, dim=64, n_heads=4, hidden_dim=128, vocab_size=500,
                              max_position_embeddings=64)
    model = DistilBertModel(config)
    return perturbed_checkpoint(model, noise=0.02, folder=tmp_path / "distilbert"), model.eval()


def test_hook_register_architectures(distilbert_plugin, distilbert_dir, tmp_path):
    """A plugin registered at run time adds an architecture the CLI then uses."""
    folder, source = distilbert_dir
    reg, out = tmp_path / "r.db", tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["learngene", "add", str(folder), "--keep", "1", "--name", "db", "--registry", str(reg)])
    assert result.exit_code == 0, result.output
    assert "(distilbert, ordered" in result.output
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


@pytest.mark.skipif(not EXAMPLE_INSTALLED, reason="pip install -e docs/examples/zoo-distilbert (install.sh --test)")
def test_example_plugin_works_through_its_entry_point(distilbert_dir, tmp_path):
    """Only the installed package: a fresh process, where nothing is registered at run time, finds, lists and
    uses it through the zoo CLI (one process for the three commands: each would otherwise re-import torch)."""
    folder, _ = distilbert_dir
    reg, out = tmp_path / "r.db", tmp_path / "out"
    commands = [["plugins", "--json"], ["learngene", "add", str(folder), "--keep", "0.5", "--registry", str(reg)],
                ["materialize", "--arch", "distilbert", "--layers", "4", "--hidden", "96", "--out", str(out),
                 "--registry", str(reg)]]
    code = textwrap.dedent(f"""
        import json
        from click.testing import CliRunner
        from zoo.cli import cli
        results = [CliRunner().invoke(cli, args) for args in {commands!r}]
        print(json.dumps([(r.exit_code, r.output) for r in results]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (code_list, listing), (code_add, added), (code_mat, made) = json.loads(result.stdout.strip().splitlines()[-1])
    assert (code_list, code_add, code_mat) == (0, 0, 0), (listing, added, made)
    listed = {row["name"]: row for row in json.loads(listing)["plugins"]}
    assert listed["distilbert"]["source"] == "zoo-distilbert 0.1.0"
    assert listed["distilbert"]["module"] == "zoo_distilbert"
    assert listed["distilbert"]["architectures"] == ["distilbert"]
    assert "(distilbert, ordered" in added and "materialized DistilBertModel" in made
    model = DistilBertModel.from_pretrained(out).eval()
    assert (model.config.n_layers, model.config.dim, model.config.n_heads, model.config.hidden_dim) == (4, 96, 6, 192)
    assert (Path(out) / "zoo.json").is_file()
    hidden = model(input_ids=torch.tensor([[1, 5, 7, 9]])).last_hidden_state
    assert hidden.shape == (1, 4, 96) and torch.isfinite(hidden).all()


def test_duplicate_names_are_an_error_naming_both_plugins():
    from zoo_plugins.architectures.bert import BertAdapter

    before = dict(zoo.catalog().architectures)
    with pytest.raises(zoo.DuplicateNameError, match="'bert' from plugin 'impostor' conflicts with plugin 'bert'"):
        zoo.register_plugin(make_plugin(BertAdapter()), name="impostor")
    assert zoo.catalog().architectures.keys() == before.keys()  # rejected whole
    assert zoo.catalog().architectures["bert"].plugin == "bert"


@pytest.mark.parametrize("claim, other, what", [
    ({"model_types": ("bert",)}, "bert", "model_type 'bert'"),
    ({"arch_aliases": ("gpt",)}, "gpt2", "architecture name or alias 'gpt'"),
    ({"source_aliases": {"bert-base": "someone/else"}}, "bert", "source alias 'bert-base'"),
])
def test_adapters_may_not_share_model_types_or_aliases(claim, other, what):
    """Which adapter reads a checkpoint, or answers to an alias, never depends on the order plugins load in."""
    from zoo_plugins.architectures.bert import BertAdapter

    impostor = type("Impostor", (BertAdapter,), {"name": "impostor", "model_types": ("impostor",),
                                                  "arch_aliases": (), "source_aliases": {}, **claim})
    before = dict(zoo.catalog().architectures)
    with pytest.raises(zoo.DuplicateNameError) as raised:
        zoo.register_plugin(make_plugin(impostor()), name="overlapping")
    assert str(raised.value) == (f"architecture 'impostor' from plugin 'overlapping' and architecture '{other}' from "
                                 f"plugin '{other}' both claim {what}; each must belong to one architecture")
    assert zoo.catalog().architectures.keys() == before.keys()  # rejected whole


def test_explicit_replace_overrides():
    from zoo_plugins.architectures.bert import BertAdapter

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


def test_builtins_are_listed_once():
    """zoo.plugin_host.BUILTIN_PLUGINS is the one list: it names every module of plugins/ (and its subpackages, one
    per kind) that implements a hook, and pyproject.toml does not list them again as entry points."""
    import ast
    import tomllib

    from zoo.plugin_host import BUILTIN_PLUGINS

    root = Path(__file__).resolve().parents[1]
    with_hooks = set()
    for path in (root / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text())
        if any("hookimpl" in ast.unparse(d) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
               for d in node.decorator_list):
            with_hooks.add(".".join(["zoo_plugins", *path.relative_to(root / "plugins").with_suffix("").parts]))
    assert with_hooks and set(BUILTIN_PLUGINS) == with_hooks
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("entry-points", {}).get("zoo", {})
    assert not [value for value in declared.values() if value.startswith("zoo_plugins.")]


def test_builtins_are_grouped_by_kind():
    """plugins/ has one subpackage per kind; each built-in implements the hook of its folder's kind (a transform's
    module may register its own resize strategy too) and has a name no other built-in has (a plugin's name is its
    module's last name)."""
    import ast

    from zoo.plugin_host import BUILTIN_PLUGINS

    root = Path(__file__).resolve().parents[1]
    kinds = {"architectures": "register_architectures", "transforms": "register_transforms",
             "strategies": "register_resize_strategies", "sources": "resolve_source"}
    wrong = []
    for module in BUILTIN_PLUGINS:
        _, kind, name = module.split(".")
        tree = ast.parse((root / "plugins" / kind / f"{name}.py").read_text())
        hooks = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                 and any("hookimpl" in ast.unparse(d) for d in node.decorator_list)}
        if kinds.get(kind) not in hooks:
            wrong.append(f"{module} implements {sorted(hooks)}, not {kinds.get(kind, f'a kind named {kind}')}")
    assert wrong == []
    short = [module.rsplit(".", 1)[-1] for module in BUILTIN_PLUGINS]
    assert len(set(short)) == len(short)


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists packages by hand (zoo_plugins is the plugins/ folder): every folder of zoo/ and plugins/
    that holds Python files must be listed, or an installed zoo lacks it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {path.parent.relative_to(root) for top in ("zoo", "plugins") for path in (root / top).rglob("*.py")}
    needed = {".".join(["zoo_plugins" if f.parts[0] == "plugins" else "zoo", *f.parts[1:]]) for f in folders}
    assert sorted(needed - listed) == []
