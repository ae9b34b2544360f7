"""Bad input, through the CLI and the Python API: one clear line, a non-zero exit, no traceback, registry unchanged.

Plus property-based tests over target configs: a valid one builds a model of exactly the requested shapes, an
invalid one raises InvalidConfigError and nothing else, and a size that would exhaust memory is refused before
anything is allocated, saying how much it would need.
"""

from __future__ import annotations

import ast
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo.cli import cli
from zoo.registry import Registry
from zoo.registry.store import to_url


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: torch's thread pool only costs here (20x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory, tiny_bert_dir) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "registry.db"
    zoo.add_learngene(str(tiny_bert_dir), name="tiny", registry=path)
    return path


@pytest.fixture()
def registry(base_registry, tmp_path) -> Path:
    path = tmp_path / "registry.db"
    shutil.copyfile(base_registry, path)
    return path


def snapshot(path: Path) -> list:
    with Registry(to_url(path), create=False) as reg:
        return [(i.name, [g["sha256"] for g in reg.get(i.name, detail=True).gene_summary]) for i in reg.list()]


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """Bad sources and bad output folders, made once."""
    root = tmp_path_factory.mktemp("places")
    config = json.loads((tiny_bert_dir / "config.json").read_text())

    def folder(name: str, cfg: dict | str | None, weights: bytes | None = None, weights_name="model.safetensors"):
        path = root / name
        path.mkdir()
        if cfg is not None:
            (path / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
        if weights is not None:
            (path / weights_name).write_bytes(weights)
        return path

    real_weights = (tiny_bert_dir / "model.safetensors").read_bytes()
    out = {
        "file": root / "a-file.txt",
        "empty": folder("empty", None),
        "no_type": folder("no-type", {k: v for k, v in config.items() if k != "model_type"}, real_weights),
        "bad_json": folder("bad-json", "{not json", real_weights),
        "garbage": folder("garbage", config, b"\x00garbage, not safetensors" * 10),
        "t5": folder("t5", {**config, "model_type": "t5"}, real_weights),
        "truncated": folder("truncated", config, real_weights[: len(real_weights) // 2]),
        "user_dir": root / "user-dir",
        "registry_dir": root / "registry-dir",
        "link": root / "link",
    }
    out["file"].write_text("x")
    out["user_dir"].mkdir()
    (out["user_dir"] / "notes.txt").write_text("mine")
    out["registry_dir"].mkdir()
    out["link"].symlink_to(out["user_dir"], target_is_directory=True)
    return out


# (arguments, expected text in the single error line). {name} placeholders are filled from `places`,
# {tiny} is the tiny BERT folder, {out} a fresh output folder, {reg} the test's registry.
CLI_CASES = [
    # names
    (["learngene", "add", "{tiny}", "--name", "../escape"], "invalid learngene name '../escape'"),
    (["learngene", "add", "{tiny}", "--name", ""], "invalid learngene name ''"),
    (["learngene", "add", "{tiny}", "--name", "x" * 129], "invalid learngene name"),
    (["learngene", "add", "{tiny}", "--name", "has space"], "invalid learngene name 'has space'"),
    (["learngene", "add", "{tiny}", "--name", ".hidden"], "invalid learngene name '.hidden'"),
    (["learngene", "add", "{tiny}", "--name", "a/b"], "invalid learngene name 'a/b'"),
    (["learngene", "add", "{tiny}", "--name", "line\n"], "invalid learngene name 'line\\n'"),
    (["learngene", "add", "{tiny}", "--name", "tiny"], "a learngene named 'tiny' already exists"),
    (["learngene", "add", "{tiny}", "--device", "tpu"], "invalid device 'tpu'"),
    (["learngene", "show", "nope"], "unknown learngene 'nope'; valid choices: tiny"),
    (["learngene", "rm", "../tiny"], "unknown learngene '../tiny'; valid choices: tiny"),
    (["materialize", "--from", "../../etc/passwd", "--out", "{out}"], "unknown learngene '../../etc/passwd'"),
    # sizes: non-integer, zero, negative, indivisible, not settable
    (["materialize", "--from", "tiny", "--layers", "0", "--out", "{out}"], "--layers must be at least 1, got 0"),
    (["materialize", "--from", "tiny", "--layers", "-3", "--out", "{out}"], "--layers must be at least 1, got -3"),
    (["materialize", "--from", "tiny", "--layers", "abc", "--out", "{out}"], "'abc' is not a valid integer"),
    (["materialize", "--from", "tiny", "--layers", "2.5", "--out", "{out}"], "'2.5' is not a valid integer"),
    (["materialize", "--from", "tiny", "--hidden", "-32", "--out", "{out}"], "--hidden must be at least 1"),
    (["materialize", "--from", "tiny", "--heads", "0", "--out", "{out}"], "--heads must be at least 1"),
    (["materialize", "--from", "tiny", "--ffn", "-1", "--out", "{out}"], "--ffn must be at least 1"),
    (["materialize", "--from", "tiny", "--hidden", "33", "--out", "{out}"],
     "--hidden 33 does not fit the source's attention heads: its head size 16 does not divide 33 and neither do "
     "its 2 heads; pass --heads, one of: 1, 3, 11, 33"),  # the source's head count, not a --heads never passed
    (["materialize", "--from", "tiny", "--hidden", "32", "--heads", "3", "--out", "{out}"],
     "head counts that divide it: 1, 2, 4, 8, 16, 32"),
    (["materialize", "--from", "tiny", "--kv-heads", "2", "--out", "{out}"], "'bert' cannot set --kv-heads"),
    (["materialize", "--from", "tiny", "--head-dim", "8", "--out", "{out}"], "cannot set --head-dim"),
    # sizes that would exhaust memory: refused before allocating, with what they would need
    (["materialize", "--from", "tiny", "--layers", "1000000000", "--out", "{out}"], "GiB to build"),
    (["materialize", "--from", "tiny", "--hidden", "1600000", "--out", "{out}"], "GiB to build"),
    (["materialize", "--from", "tiny", "--ffn", "99999999999999999999999", "--out", "{out}"], "GiB to build"),
    # keep ratios
    (["learngene", "add", "{tiny}", "--keep", "0"], "must be in (0, 1], got 0"),
    (["learngene", "add", "{tiny}", "--keep", "1.5"], "must be in (0, 1], got 1.5"),
    (["learngene", "add", "{tiny}", "--keep", "-0.5"], "must be in (0, 1], got -0.5"),
    (["learngene", "add", "{tiny}", "--keep", "nan"], "must be in (0, 1], got nan"),
    (["learngene", "add", "{tiny}", "--keep", "inf"], "must be in (0, 1], got inf"),
    (["learngene", "add", "{tiny}", "--keep", "abc"], "must be a number in (0, 1], got 'abc'"),
    (["learngene", "add", "{tiny}", "--keep", "hidden=2"], "ratio for 'hidden' must be in (0, 1], got 2"),
    (["learngene", "add", "{tiny}", "--keep", "kv_heads=0.5"], "roles this bert model does not have: kv_heads"),
    # devices
    (["materialize", "--from", "tiny", "--device", "tpu", "--out", "{out}"], "invalid device 'tpu'"),
    (["materialize", "--from", "tiny", "--device", "cuda:x", "--out", "{out}"], "invalid device 'cuda:x'"),
    (["materialize", "--from", "tiny", "--device", "cuda:-1", "--out", "{out}"], "invalid device 'cuda:-1'"),
    # source paths
    (["learngene", "add", "./does/not/exist"], "neither an existing path nor a hub id"),
    (["learngene", "add", "{file}"], "is not a model folder or a .safetensors file"),
    (["learngene", "add", "{empty}"], "holds no *.safetensors or pytorch_model*.bin weights"),
    (["learngene", "add", "{no_type}"], "has no 'model_type'"),
    (["learngene", "add", "{bad_json}"], "cannot read"),
    (["learngene", "add", "{garbage}"], "cannot read the weights of"),
    (["learngene", "add", "{truncated}"], "cannot read the weights of"),
    (["learngene", "add", "{t5}"], "unknown model type 't5'"),
    # output paths
    (["materialize", "--from", "tiny", "--out", "{file}"], "is a file"),
    (["materialize", "--from", "tiny", "--out", "{link}"], "is a symbolic link"),
    (["materialize", "--from", "tiny", "--out", "{user_dir}"], "is a non-empty folder that zoo did not write"),
    (["materialize", "--from", "tiny", "--out", "{reg_parent}"], "holds the registry"),
    (["materialize", "--from", "tiny", "--out", "{reg}"], "is a file"),
    # registry locations
    (["learngene", "list", "--registry", "sqlite://"], "in-memory registries are not supported"),
    (["learngene", "list", "--registry", "sqlite:///:memory:"], "in-memory registries are not supported"),
    (["learngene", "list", "--registry", "mysql://me:s3cret@localhost/db"], "cannot use registry URL 'mysql://me:***@"),
    (["learngene", "list", "--registry", "nosuchdb://host/db"], "cannot use registry URL 'nosuchdb://host/db'"),
    (["learngene", "list", "--registry", "://nothing"], "invalid registry URL"),
    (["learngene", "list", "--registry", "postgresql://me:s3cret@127.0.0.1:1/db"], "cannot open registry"),
    (["learngene", "list", "--registry", "{empty}"], "is a directory"),
    (["learngene", "list", "--registry", "{file}"], "the file is not a database (damaged, or not a registry)"),
    (["learngene", "list", "--registry", "{empty}/missing.db"], "does not exist"),
    (["verify", "--registry", "{empty}/missing.db"], "does not exist"),
    # wrong families and unknown components
    (["materialize", "--arch", "gpt2", "--from", "tiny", "--out", "{out}"], "is a bert learngene, not gpt2"),
    (["materialize", "--arch", "gpt2", "--out", "{out}"], "has no gpt2 learngene (it has: bert)"),
    (["materialize", "--arch", "nosuch", "--out", "{out}"], "unknown architecture 'nosuch'; valid choices:"),
    (["materialize", "--from", "tiny", "--strategy", "magic", "--out", "{out}"], "unknown resize strategy 'magic'"),
    (["materialize", "--from", "tiny", "--stats", "bogus", "--out", "{out}"], "'bogus' is not one of"),
    (["learngene", "add", "{tiny}", "--transform", "fft"], "unknown transform 'fft'; valid choices:"),
    (["learngene", "add", "{tiny}", "--dtype", "int8"], "'int8' is not one of"),
    (["learngene", "add", "{tiny}", "--transform", "dct", "--param", "foo=1"], "transform 'dct' has no parameter 'foo'"),
    (["learngene", "add", "{tiny}", "--param", "novalue"], "expected KEY=VALUE, got 'novalue'"),
]


@pytest.mark.parametrize("args, message", CLI_CASES, ids=[f"{i:02d}-{' '.join(a[:2])}" for i, (a, _) in
                                                          enumerate(CLI_CASES)])
def test_cli_bad_input_is_one_clear_line(registry, places, tiny_bert_dir, tmp_path, args, message):
    fill = {k: str(v) for k, v in places.items()}
    fill.update(tiny=str(tiny_bert_dir), out=str(tmp_path / "out"), reg=str(registry), reg_parent=str(registry.parent))
    args = [a.format(**fill) if "{" in a and "://" not in a else a for a in args]
    if "--registry" not in args:
        args += ["--registry", str(registry)]
    before = snapshot(registry)
    result = CliRunner().invoke(cli, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output and "s3cret" not in result.output
    assert snapshot(registry) == before
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in places["user_dir"].iterdir()) == ["notes.txt"]


def test_verbose_flag_shows_the_traceback(registry):
    result = CliRunner().invoke(cli, ["-v", "materialize", "--from", "tiny", "--layers", "0", "--out", "o",
                                      "--registry", str(registry)])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "--layers must be at least 1" in result.output


API_CASES = [
    ("materialize", dict(layers="4"), zoo.InvalidConfigError, "--layers must be a whole number, got '4'"),
    ("materialize", dict(layers=4.0), zoo.InvalidConfigError, "--layers must be a whole number, got 4.0"),
    ("materialize", dict(layers=True), zoo.InvalidConfigError, "--layers must be a whole number, got True"),
    ("materialize", dict(hidden=float("nan")), zoo.InvalidConfigError, "--hidden must be a whole number, got nan"),
    ("materialize", dict(heads=-2), zoo.InvalidConfigError, "--heads must be at least 1, got -2"),
    ("materialize", dict(layers=10**6, hidden=4096), zoo.InvalidConfigError, "GiB to build"),
    ("materialize", dict(device="gpu"), zoo.InvalidConfigError, "invalid device 'gpu'"),
    ("materialize", dict(device="meta"), zoo.InvalidConfigError, "invalid device 'meta'"),
    ("materialize", dict(stats="bogus"), zoo.InvalidConfigError, "unknown statistics rule 'bogus'"),
    ("materialize", dict(arch="gpt2"), zoo.InvalidConfigError, "is a bert learngene, not gpt2"),
    ("materialize", dict(learngene="nope"), zoo.UnknownNameError, "unknown learngene 'nope'; valid choices: tiny"),
    ("materialize", dict(strategy="magic"), zoo.UnknownNameError, "unknown resize strategy 'magic'"),
    ("materialize", dict(registry="sqlite://"), zoo.RegistryError, "in-memory registries are not supported"),
    ("materialize", dict(out="{link}"), zoo.InvalidConfigError, "is a symbolic link"),
    ("materialize", dict(out="{file}"), zoo.InvalidConfigError, "exists and is not a folder"),
    ("add_learngene", dict(name=123), zoo.InvalidConfigError, "invalid learngene name 123"),
    ("add_learngene", dict(name="tiny"), zoo.DuplicateNameError, "'tiny' already exists"),
    ("add_learngene", dict(keep=True), zoo.InvalidConfigError, "--keep must be a ratio"),
    ("add_learngene", dict(keep=[0.5]), zoo.InvalidConfigError, "--keep must be a ratio"),
    ("add_learngene", dict(keep={"hidden": 0}), zoo.InvalidConfigError, "ratio for 'hidden' must be in (0, 1]"),
    ("add_learngene", dict(dtype="float64"), zoo.InvalidConfigError, "unknown storage dtype 'float64'"),
    ("add_learngene", dict(transform="nope"), zoo.UnknownNameError, "unknown transform 'nope'"),
    ("add_learngene", dict(transform="dct", params={"x": 1}), zoo.InvalidConfigError, "transform 'dct' has no parameter 'x'"),
    ("add_learngene", dict(source="/does/not/exist"), zoo.SourceNotFoundError, "neither an existing path"),
    ("add_learngene", dict(source="{garbage}"), zoo.ZooError, "cannot read the weights of"),
]


@pytest.mark.parametrize("function, kwargs, error, message", API_CASES,
                         ids=[f"{f}-{'-'.join(k)}-{i}" for i, (f, k, _, _) in enumerate(API_CASES)])
def test_api_bad_input_raises_one_clear_error(registry, places, tiny_bert_dir, tmp_path, function, kwargs, error,
                                              message):
    kwargs = {k: v.format(**places) if isinstance(v, str) and v.startswith("{") else v for k, v in kwargs.items()}
    kwargs.setdefault("registry", registry)
    before = snapshot(registry)
    if function == "materialize":
        kwargs.setdefault("device", "cpu")
        kwargs.setdefault("learngene", "tiny")
        call = lambda: zoo.materialize(**kwargs)  # noqa: E731
    else:
        source = kwargs.pop("source", str(tiny_bert_dir))
        call = lambda: zoo.add_learngene(source, **kwargs)  # noqa: E731
    with pytest.raises(error) as caught:
        call()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(registry) == before


def test_huge_sizes_are_refused_before_allocating(registry):
    """A 10^12-parameter target: refused in well under a second, with its size, and no memory was taken."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(zoo.InvalidConfigError) as caught:
        zoo.materialize(learngene="tiny", layers=100_000, hidden=1024, registry=registry, device="cpu")
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024  # KiB: < 200 MB more
    message = str(caught.value)
    assert re.search(r"the target has [\d,]{15,} parameters and needs about \d+\.\d GiB to build", message), message
    assert message.endswith("choose smaller sizes")


# -- property-based: target configs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_registry(base_registry):
    with Registry(to_url(base_registry), create=False) as reg:
        yield reg


SOURCE = dict(layers=2, hidden=32, heads=2, ffn=64, head_dim=16, vocab=96)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def expected_sizes(layers, hidden, heads, ffn) -> tuple | None:
    """What zoo promises for these options on the tiny BERT, or None if it must refuse them."""
    h = hidden or SOURCE["hidden"]
    if heads is None:
        heads = h // SOURCE["head_dim"] if hidden and h % SOURCE["head_dim"] == 0 else SOURCE["heads"]
    if h % heads:
        return None
    f = ffn or (max(1, round(SOURCE["ffn"] * h / SOURCE["hidden"])) if hidden else SOURCE["ffn"])
    return layers or SOURCE["layers"], h, heads, f


maybe = lambda s: st.none() | s  # noqa: E731


@PROPERTY
@given(layers=maybe(st.integers(1, 4)), hidden=maybe(st.integers(1, 72)), heads=maybe(st.integers(1, 9)),
       ffn=maybe(st.integers(1, 100)))
def test_valid_configs_build_the_requested_shapes(open_registry, layers, hidden, heads, ffn):
    want = expected_sizes(layers, hidden, heads, ffn)
    call = lambda: zoo.materialize(learngene="tiny", layers=layers, hidden=hidden, heads=heads,  # noqa: E731
                                   ffn=ffn, registry=open_registry, device="cpu")
    if want is None:
        with pytest.raises(zoo.InvalidConfigError, match="does not divide"):
            call()
        return
    model = call()
    n_layers, h, n_heads, f = want
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == want
    assert len(model.encoder.layer) == n_layers
    layer = model.encoder.layer[-1]
    assert layer.attention.self.query.weight.shape == (h, h)
    assert layer.intermediate.dense.weight.shape == (f, h)
    assert layer.output.dense.weight.shape == (h, f)
    assert model.embeddings.word_embeddings.weight.shape == (SOURCE["vocab"], h)  # vocabulary never resized
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[2, 7, 9, 3]])).last_hidden_state
    assert out.shape == (1, 4, h) and torch.isfinite(out).all()


OPTIONS = ["layers", "hidden", "heads", "ffn", "kv_heads", "head_dim", "positions"]
GARBAGE = (st.integers(-(2**80), 0) | st.integers(10**9, 2**80) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=4) | st.booleans() | st.just("4") | st.just(b"4") | st.just([4]) | st.just(4.0))


@PROPERTY
@given(option=st.sampled_from(OPTIONS), value=GARBAGE)
def test_invalid_configs_raise_invalid_config_error_only(open_registry, option, value):
    with pytest.raises(zoo.InvalidConfigError) as caught:
        zoo.materialize(learngene="tiny", registry=open_registry, device="cpu", **{option: value})
    message = str(caught.value)
    assert "\n" not in message and (f"--{option.replace('_', '-')}" in message or "GiB" in message)


# -- security: hostile checkpoints, unsafe loaders, plugins ---------------------------------------------------------
class _Bomb:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling this would run a shell command
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(registry, tiny_bert_dir, tmp_path):
    folder, marker = tmp_path / "bomb", tmp_path / "pwned"
    folder.mkdir()
    shutil.copyfile(tiny_bert_dir / "config.json", folder / "config.json")
    torch.save({"embeddings.word_embeddings.weight": _Bomb(marker)}, folder / "pytorch_model.bin")
    before = snapshot(registry)
    result = CliRunner().invoke(cli, ["learngene", "add", str(folder), "--registry", str(registry)])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot read the weights of" in result.output and "UnpicklingError" in result.output
    assert not marker.exists() and snapshot(registry) == before


def test_remote_code_in_a_checkpoint_is_never_run(registry, tiny_bert_dir, tmp_path):
    folder, marker = tmp_path / "remote", tmp_path / "pwned"
    folder.mkdir()
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilModel"], auto_map={"AutoModel": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(tiny_bert_dir / "model.safetensors", folder / "model.safetensors")
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    result = CliRunner().invoke(cli, ["learngene", "add", str(folder), "--registry", str(registry)])
    assert result.exit_code == 1 and "unknown model type 'evil'" in result.output
    assert not marker.exists()


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_zoo_and_its_plugins_use_only_safe_loaders():
    """Static check of every module: torch.load only with weights_only=True, trust_remote_code never true,
    no pickle, no allow_pickle, no eval/exec."""
    root = Path(__file__).resolve().parents[1]
    offences = []
    for path in sorted([*(root / "zoo").rglob("*.py"), *(root / "plugins").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.keyword) and node.arg in ("trust_remote_code", "allow_pickle"):
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    offences.append(f"{where}: {node.arg}")
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            kwargs = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load") or name == "load" and "weights_only" in kwargs:
                safe = kwargs.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    offences.append(f"{where}: {name} without weights_only=True")
            if name.split(".")[0] in ("pickle", "cloudpickle", "dill", "marshal") or name in ("eval", "exec"):
                offences.append(f"{where}: {name}")
    assert offences == []


def test_plugins_load_only_from_installed_entry_points(tmp_path):
    """A zoo-plugin-looking module on the path, or a `zoo_plugins` package in the working directory, is never
    imported; the same kind of module declared by an installed distribution's entry point is."""
    site = tmp_path / "site"
    site.mkdir()
    hook = ("from zoo import hookimpl\nopen({marker!r}, 'w').write('imported')\n"
            "@hookimpl\ndef register_transforms(register):\n    pass\n")
    for module in ("zoo_sneaky", "zoo_plugin_sneaky", "zoo_declared"):
        (site / f"{module}.py").write_text(hook.format(marker=str(tmp_path / f"{module}.imported")))
    dist = site / "zoo_declared-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-declared\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[zoo]\ndeclared = zoo_declared\n")
    shadow = tmp_path / "cwd" / "zoo_plugins"  # a look-alike of the built-ins where the user runs zoo
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "bert.py").write_text(hook.format(marker=str(tmp_path / "shadow.imported")))
    env = {**os.environ, "PYTHONPATH": str(site), "ZOO_LOAD_PLUGINS": "bert,dct,spectral,declared,zoo_sneaky"}
    zoo_script = Path(sys.executable).with_name("zoo")
    result = subprocess.run([str(zoo_script), "plugins", "--json"], capture_output=True, text=True, timeout=300,
                            env=env, cwd=shadow.parent)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["declared"]["source"] == "zoo-declared 1.0" and (tmp_path / "zoo_declared.imported").exists()
    assert "zoo_sneaky" not in listed and not (tmp_path / "zoo_sneaky.imported").exists()
    assert not (tmp_path / "zoo_plugin_sneaky.imported").exists()
    assert not (tmp_path / "shadow.imported").exists() and listed["bert"]["source"] != "zoo_plugins"


def test_out_replaces_only_what_zoo_wrote(registry, tmp_path):
    out = tmp_path / "model"
    zoo.materialize(learngene="tiny", layers=1, registry=registry, device="cpu", out=out)
    written = json.loads((out / "zoo.json").read_text())["files"]
    assert "config.json" in written and "vocab.txt" in written
    zoo.materialize(learngene="tiny", layers=3, registry=registry, device="cpu", out=out)  # zoo's own: replaced
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(zoo.InvalidConfigError, match="non-empty folder that zoo did not write"):
        zoo.materialize(learngene="tiny", layers=2, registry=registry, device="cpu", out=out)
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 3
