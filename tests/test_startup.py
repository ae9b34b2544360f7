"""Commands that only list or explain things, and importing zoo.testing (a pytest plugin, loaded by every pytest
session where zoo is installed), never import torch or transformers: those cost seconds (docs/performance.md).

Each case runs in a fresh process under ``python -X importtime``, which lists every module the process imported,
with zoo's own plugins only (a third-party plugin in this environment may import whatever it likes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.plugin_host import BUILTIN_PLUGINS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")
RUN_CLI = "import sys; from zoo.cli import main; sys.argv = ['zoo', *sys.argv[1:]]; main()"


def imported(tmp_path: Path, code: str, *args: str, **env: str) -> set[str]:
    """The modules a fresh ``python -X importtime -c code args...`` imports (it must succeed): those importtime
    lists, and those in ``sys.modules`` at exit (importtime does not see ``importlib.import_module``, which loads
    the plugins)."""
    registry = tmp_path / "registry.db"
    if not registry.exists():
        shutil.copyfile(ROOT / "registry.db.example", registry)
    environ = {**os.environ, "ZOO_REGISTRY": str(registry),
               "ZOO_LOAD_PLUGINS": ",".join(m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS), **env}
    at_exit = "import atexit, sys; atexit.register(lambda: print('modules:', *sys.modules, file=sys.stderr))\n"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", at_exit + code, *args], capture_output=True,
                            text=True, env=environ, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    timed = {line.rpartition("|")[2].strip() for line in lines if line.startswith("import time:")}
    at_end = {name for line in lines if line.startswith("modules: ") for name in line.split()[1:]}
    assert "zoo" in timed and "zoo" in at_end
    return timed | at_end


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize("code", ["import zoo.cli", "import zoo.testing", "import zoo; zoo.catalog()"])
def test_imports_load_no_torch(tmp_path, code):
    modules = imported(tmp_path, code)
    assert "zoo.plugin_host" in modules  # the listing is real
    assert heavy(modules) == []


@pytest.mark.parametrize("args", [["--help"], ["learngene", "list"], ["learngene", "show", "all-minilm-l6-v2.ordered-half"],
                                  ["plugins", "--json"]])
def test_listing_commands_load_no_torch(tmp_path, args):
    modules = imported(tmp_path, RUN_CLI, *args)
    assert {"zoo_plugins.architectures.bert", "zoo_plugins.transforms.dct"} <= modules  # every built-in was loaded
    assert heavy(modules) == []


def test_tab_completion_loads_no_torch(tmp_path):
    modules = imported(tmp_path, RUN_CLI, _ZOO_COMPLETE="bash_complete", COMP_WORDS="zoo learngene ", COMP_CWORD="2")
    assert heavy(modules) == []


def test_the_listing_sees_torch_when_it_is_imported(tmp_path):
    # otherwise every check above would pass however much was imported
    assert heavy(imported(tmp_path, "import zoo.plugin_host, torch"))


def _gpt2_registry(tmp_path: Path, perturbed_checkpoint) -> None:
    """A registry with a keep-1 learngene of a tiny GPT-2, where :func:`imported` looks for one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import zoo

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    source = perturbed_checkpoint(model, "gpt2", seed=0)
    zoo.add_learngene(str(source), name="g", calibrate="none", registry=tmp_path / "registry.db")


MODEL_CLASS = ("transformers.modeling_utils", "transformers.models.gpt2.modeling_gpt2")
UNDECLARED = "import zoo_plugins.architectures.gpt2 as gpt2; gpt2.GPT2Adapter.class_layout = None\n"


@pytest.mark.parametrize("declared", [True, False])
def test_materializing_a_declared_family_does_not_import_its_model_class(tmp_path, perturbed_checkpoint, declared):
    # most of transformers' import cost is the model class; GPT-2 declares its layout (zoo.hf.ClassLayout)
    _gpt2_registry(tmp_path, perturbed_checkpoint)
    modules = imported(tmp_path, ("" if declared else UNDECLARED) + RUN_CLI, "materialize", "--from", "g", "--out",
                       str(tmp_path / "out"), "--device", "cpu", "--quiet")
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (set(MODEL_CLASS) & modules == set()) is declared  # without the declaration the class is imported
