"""zoo.request.MaterializeRequest: checked once when made, a value afterwards, and the same request whether it
comes from the keyword API, the CLI or a zoo.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

import zoo
from zoo.adapters import SIZE_OPTIONS
from zoo.cli import LIKE_PARAMS, cli
from zoo.request import SIZES, MaterializeRequest

SHA = "ab" * 32

BAD = [
    (dict(layers=0), "--layers must be at least 1, got 0"),
    (dict(kv_heads="2"), "--kv-heads must be a whole number, got '2'"),
    (dict(stats="bogus"), "unknown statistics rule 'bogus'; valid choices: restore, fan_in, none"),
    (dict(dtype="float64"), "unknown dtype 'float64'; valid choices: float32, float16, bfloat16"),
    (dict(device="gpu"), "invalid device 'gpu'; valid choices: auto, cpu, cuda, cuda:N"),
    (dict(device="cuda:x"), "invalid device 'cuda:x'; valid choices: auto, cpu, cuda, cuda:N"),
    (dict(seed=1.5), "--seed must be a whole number (or None: not seeded), got 1.5"),
    (dict(seed=True), "--seed must be a whole number (or None: not seeded), got True"),
    (dict(options=["img_size", 224]), "options must map option names to values (--set KEY=VALUE)"),
    (dict(options={1: 2}), "options must map option names to values (--set KEY=VALUE)"),
    (dict(learngene_sha256="abc"), "learngene_sha256 must be 64 hex digits"),
    (dict(strategy=3), "strategy must be a name, got 3"),
    (dict(arch=None), "give --arch (one of bert"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[next(iter(k)) + str(i) for i, (k, _) in enumerate(BAD)])
def test_a_bad_request_is_refused_when_made_in_one_line(kwargs, message):
    with pytest.raises(zoo.InvalidConfigError) as caught:
        MaterializeRequest(**{"arch": "bert", **kwargs})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_request_is_a_value():
    options = {"img_size": 224}
    request = MaterializeRequest("vit", layers=6, options=options, device=torch.device("cpu"))
    options["img_size"] = 32  # the caller's dict is theirs
    assert request.options == {"img_size": 224} and request.device == "cpu"
    with pytest.raises(TypeError):
        request.options["img_size"] = 32  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.layers = 2  # type: ignore[misc]
    assert dataclasses.replace(request, layers=2).layers == 2 and request.layers == 6
    with pytest.raises(zoo.InvalidConfigError, match="must be at least 1"):
        dataclasses.replace(request, layers=0)  # a changed copy is checked like a new one
    with pytest.raises(TypeError):
        MaterializeRequest("bert", 4)  # type: ignore[misc]  # only the family is positional


def test_the_record_is_the_request():
    request = MaterializeRequest(learngene="st", hidden=16, heads=2, strategy="spectral", options={"a": [1, 2]},
                                 seed=None, dtype="bfloat16", device="cpu", learngene_sha256=SHA)
    record = request.record()
    assert MaterializeRequest(**json.loads(json.dumps(record))) == request  # through zoo.json and back
    assert list(record) == ["learngene", "hidden", "heads", "strategy", "stats", "options", "seed", "dtype",
                            "device", "learngene_sha256"]  # sizes left to the source are left out
    assert request.command("out/x") == ("zoo materialize --from st --hidden 16 --heads 2 --strategy spectral --stats "
                                        "restore --set 'a=[1, 2]' --dtype bfloat16 --device cpu --out x")
    assert MaterializeRequest("gpt2").command() == ("zoo materialize --arch gpt2 --stats restore --seed 0 --dtype "
                                                    "float32 --device auto")


def test_the_cli_and_the_request_agree_on_fields():
    # --like copies a zoo.json's record field by field: a field the CLI map lacked would be dropped silently
    assert set(LIKE_PARAMS) == set(MaterializeRequest(learngene="x").record()) | set(SIZES)
    assert set(SIZES) == set(SIZE_OPTIONS)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_bert_dir):
    path = tmp_path_factory.mktemp("request") / "registry.db"
    zoo.add_learngene(str(tiny_bert_dir), name="tiny", registry=path)
    return path


def test_the_keyword_api_cli_and_request_build_the_same_model(registry, tmp_path):
    request = MaterializeRequest(learngene="tiny", layers=1, hidden=16, heads=2, device="cpu", seed=3)
    by_request = zoo.materialize_request_to_disk(request, tmp_path / "a", registry=registry)
    by_keywords = zoo.materialize_to_disk(tmp_path / "b", learngene="tiny", layers=1, hidden=16, heads=2,
                                          device="cpu", seed=3, registry=registry)
    result = CliRunner().invoke(cli, ["materialize", "--from", "tiny", "--layers", "1", "--hidden", "16", "--heads",
                                      "2", "--device", "cpu", "--seed", "3", "--out", str(tmp_path / "c"),
                                      "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    weights = {name: (tmp_path / name / "model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"] == weights["c"]
    assert by_request["rebuild"] == by_keywords["rebuild"]
    assert MaterializeRequest(**by_request["rebuild"]) == dataclasses.replace(
        request, strategy=by_request["strategy"], learngene_sha256=by_request["learngene_sha256"])


def test_an_in_memory_request_gives_weights_of_its_dtype(registry):
    request = MaterializeRequest(learngene="tiny", layers=1, device="cpu", dtype="float16")
    model = zoo.materialize_request(request, registry=registry)
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert model.zoo_report["dtype"] == "float16" and model.zoo_report["rebuild"]["dtype"] == "float16"
    full = zoo.materialize(learngene="tiny", layers=1, device="cpu", registry=registry)
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    for (name, half), (_, single) in zip(model.state_dict().items(), full.state_dict().items()):
        assert torch.equal(half, single.half()), name
