"""Every hook in zoo/hookspecs.py is documented in docs/plugins.md (a heading ``name(args)`` whose arguments match
the spec) and has a ``test_hook_<name>`` test; the tests for the hooks not covered elsewhere live here, and run the
examples from docs/plugins.md themselves, so the docs cannot drift from what works."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

import zoo
from zoo.genes import resizable
from zoo.plugin_host import pm
from zoo.sources import Checkpoint
from zoo.testing import check_resize_strategy, check_transform_inverse, tiny_model

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
HOOKS = {name: caller.spec.argnames for name, caller in vars(pm.hook).items()
         if not name.startswith("_") and getattr(caller, "spec", None) is not None}
HEADING = re.compile(r"^#{2,4} `?(\w+)\(([^)]*)\)`?\s*$", re.M)


def doc_block(after_heading: str, lang: str = "python") -> str:
    """The first ``lang`` code block after a heading of docs/plugins.md."""
    text = DOCS.read_text()
    start = re.search(rf"^#+ {re.escape(after_heading)}\s*$", text, re.M)
    assert start, f"docs/plugins.md has no heading '{after_heading}'"
    block = re.search(rf"```{lang}\n(.*?)```", text[start.end():], re.S)
    assert block, f"no ```{lang} block after '{after_heading}'"
    return block.group(1)


def module_from_docs(after_heading: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(doc_block(after_heading), f"docs/plugins.md ({after_heading})", "exec"), module.__dict__)
    return module


# -- meta-tests ---------------------------------------------------------------------------------------------------
def test_every_hook_has_a_spec():
    assert set(HOOKS) >= {"register_architectures", "register_transforms", "register_resize_strategies",
                          "resolve_source", "register_commands"}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hooks_are_documented_with_their_arguments(hook):
    documented = {name: tuple(a.strip() for a in args.split(",") if a.strip())
                  for name, args in HEADING.findall(DOCS.read_text())}
    assert hook in documented, f"docs/plugins.md needs a heading '### {hook}({', '.join(HOOKS[hook])})'"
    assert documented[hook] == tuple(HOOKS[hook])


def test_docs_document_no_hook_that_does_not_exist():
    assert {name for name, _ in HEADING.findall(DOCS.read_text())} <= set(HOOKS)


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hooks_have_tests(hook):
    files = [*(ROOT / "tests").rglob("test_*.py"), *(ROOT / "docs" / "examples").rglob("test_*.py")]
    pattern = re.compile(rf"^def test_hook_{hook}\(", re.M)
    assert any(pattern.search(f.read_text()) for f in files), f"no test named test_hook_{hook} under tests/"


def test_plugin_environment_variables_are_documented():
    source = (ROOT / "zoo" / "plugin_host.py").read_text()
    variables = set(re.findall(r"[\"'](ZOO_[A-Z_]*PLUGINS)[\"']", source))
    assert variables >= {"ZOO_LOAD_PLUGINS", "ZOO_DISABLE_PLUGINS", "ZOO_STRICT_PLUGINS"}
    docs = DOCS.read_text()
    assert [v for v in sorted(variables) if f"`{v}`" not in docs] == []


def test_python_examples_in_the_docs_parse():
    for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S):
        ast.parse(block)


# -- hook tests ---------------------------------------------------------------------------------------------------
def tiny_bert():
    return BertModel(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                vocab_size=100, max_position_embeddings=32, type_vocab_size=2))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    model = tiny_model(tiny_bert)
    folder = tmp_path_factory.mktemp("tiny-bert") / "tiny-bert"
    model.save_pretrained(folder)
    return folder, model


def assert_same_weights(model, source, atol=1e-5):
    rebuilt = model.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(rebuilt[key], value, atol=atol, rtol=0, msg=key)


def test_hook_register_transforms(zoo_register_plugin, zoo_registry, bert_folder):
    """The quick-start plugin from docs/plugins.md: a transform that the CLI and API then use."""
    folder, source = bert_folder
    plugin = module_from_docs("Quick start", "zoo_linear")
    check_transform_inverse(plugin.Linear())
    check_resize_strategy("spectral", transform=plugin.Linear())
    zoo_register_plugin(plugin, name="linear-docs")
    assert zoo.catalog().transforms["linear"].plugin == "linear-docs"

    info = zoo.add_learngene(str(folder), transform="linear", keep=1, name="lin-full")
    assert (info.transform, info.transform_params) == ("linear", {})
    assert_same_weights(zoo.materialize(learngene="lin-full", device="cpu"), source)
    zoo.add_learngene(str(folder), transform="linear", keep=0.5, name="lin-half")
    model = zoo.materialize(learngene="lin-half", layers=3, hidden=48, device="cpu")
    assert model.config.num_hidden_layers == 3 and model.encoder.layer[2].attention.self.query.weight.shape == (48, 48)
    with pytest.raises(zoo.InvalidConfigError, match=r"transform 'linear' has no parameter 'gain'; valid: \(none\)"):
        zoo.add_learngene(str(folder), transform="linear", params={"gain": 2})


class Nearest:
    """Signal-domain resizing: synthesize each axis at its stored length, then repeat or drop samples."""

    name = "nearest"
    description = "nearest-neighbour resampling of the low-passed weights"

    def resize(self, coeffs, axes, target_shape, transform, params):
        out = coeffs
        for dim, (role, size) in enumerate(zip(axes, target_shape)):
            if not resizable(role):
                if out.shape[dim] != size:
                    raise ValueError(f"axis '{role}' is never resized")
                continue
            n = out.shape[dim]
            out = transform.synthesize(out, dim, n, **params)
            out = out.index_select(dim, torch.arange(size, device=out.device) * n // size)
        return out


def test_hook_register_resize_strategies(zoo_register_plugin, zoo_registry, bert_folder):
    """A strategy used by --strategy, and by a transform's default_strategy."""
    from zoo_plugins.transforms.dct import DCT

    class DCTNearest(DCT):
        name = "dct-nearest"
        default_strategy = "nearest"

    module = types.ModuleType("zoo_nearest")
    module.register_resize_strategies = zoo.hookimpl(lambda register: register(Nearest()))
    module.register_transforms = zoo.hookimpl(lambda register: register(DCTNearest()))
    check_resize_strategy(Nearest())
    zoo_register_plugin(module, name="nearest-test")
    assert zoo.catalog().resize_strategies["nearest"].plugin == "nearest-test"

    folder, source = bert_folder
    zoo.add_learngene(str(folder), transform="dct", keep=1, name="plain")
    zoo.add_learngene(str(folder), transform="dct-nearest", keep=1, name="dct-nearest")

    def layer_correlation(model):  # 2 -> 4 layers by repetition: layers 0 and 1 are one source layer
        a, b = (model.encoder.layer[i].attention.self.query.weight.flatten() for i in (0, 1))
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    assert layer_correlation(zoo.materialize(learngene="plain", layers=4, strategy="nearest", device="cpu")) > 0.9999
    assert layer_correlation(zoo.materialize(learngene="dct-nearest", layers=4, device="cpu")) > 0.9999
    assert layer_correlation(zoo.materialize(learngene="plain", layers=4, device="cpu")) < 0.99  # spectral blends
    assert_same_weights(zoo.materialize(learngene="plain", strategy="nearest", device="cpu"), source)
    with pytest.raises(zoo.UnknownNameError, match="valid choices: .*nearest.*spectral"):
        zoo.materialize(learngene="plain", strategy="nope", device="cpu")


def test_hook_resolve_source(zoo_register_plugin, zoo_registry, bert_folder):
    """A source only a plugin understands, with weights from a loader instead of files."""
    folder, source = bert_folder
    calls = []

    class Resolver:
        @zoo.hookimpl
        def resolve_source(self, source):
            calls.append(source)
            if not source.startswith("memory:"):
                return None
            model = tiny_model(tiny_bert)  # same seed: the weights saved in bert_folder
            return Checkpoint(ref=source, root=folder, config=model.config.to_dict(), weight_files=[],
                              loader=model.state_dict)

    zoo_register_plugin(Resolver(), name="memory-source")
    info = zoo.add_learngene("memory:bert", keep=1, name="from-memory")
    assert (info.family, info.source) == ("bert", "memory:bert")
    assert_same_weights(zoo.materialize(learngene="from-memory", device="cpu"), source)
    # sources the plugin declines still reach zoo's own resolver
    assert zoo.add_learngene(str(folder), keep=1, name="from-folder").source == str(folder.resolve())
    with pytest.raises(zoo.SourceNotFoundError, match="neither an existing path nor a hub id"):
        zoo.add_learngene("no such source!", keep=1)
    assert calls == ["memory:bert", str(folder), "no such source!"]


def test_hook_register_commands(tmp_path):
    """The register_commands example from docs/plugins.md: a `zoo hello` command. zoo adds plugin commands when
    zoo.cli is imported, so this runs in a fresh process that registers the plugin first."""
    (tmp_path / "zoo_hello.py").write_text(doc_block("register_commands(cli)"))
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import zoo, zoo_hello
        zoo.register_plugin(zoo_hello, name="hello")
        from click.testing import CliRunner
        from zoo.cli import cli
        runner = CliRunner()
        print(json.dumps([runner.invoke(cli, args).output for args in (["hello", "world"], ["plugins", "--json"])]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    hello, plugins = json.loads(result.stdout.strip().splitlines()[-1])
    assert hello == "hello world\n"
    row = {r["name"]: r for r in json.loads(plugins)["plugins"]}["hello"]
    assert (row["source"], row["module"], row["hooks"]) == ("runtime", "zoo_hello", ["register_commands"])
