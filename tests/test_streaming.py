"""Speed and scale (docs/performance.md): lazy safetensors reads, streaming extraction and streaming writes.

Every streaming path is checked against an independent reference: safetensors' own reader and writer, scipy's
DCT, and zoo's in-memory build of the same target.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import zoo
from zoo.cli import cli
from zoo.extraction import extract_groups, gene_groups
from zoo.genes import genome_groups
from zoo.plugin_host import catalog
from zoo.hf.safetensors_io import SafetensorsReader, SafetensorsWriter
from zoo.sources import from_local


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(5, 7, generator=g),
        "f16": torch.randn(3, 4, generator=g).half(),
        "bf16": torch.randn(6, generator=g).bfloat16(),
        "f64": torch.randn(2, 2, 2, generator=g, dtype=torch.float64),
        "i64": torch.arange(11),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


def test_reader_matches_safetensors_for_every_dtype(tmp_path):
    tensors = _tensors()
    save_file(dict(list(tensors.items())[:4]), tmp_path / "a.safetensors")
    save_file(dict(list(tensors.items())[4:]), tmp_path / "b.safetensors")
    reader = SafetensorsReader([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert sorted(reader) == sorted(tensors) and len(reader) == len(tensors)
    for key, want in tensors.items():
        got = reader[key]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), key
        assert reader.shape(key) == tuple(want.shape)
    assert "missing" not in reader


def test_reader_reports_a_truncated_file(tmp_path):
    save_file({"w": torch.randn(100, 100)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        SafetensorsReader([tmp_path / "cut.safetensors"])["w"]
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        SafetensorsReader([tmp_path / "junk.safetensors"])


def test_writer_takes_rows_in_any_order_and_safetensors_reads_the_file(tmp_path):
    tensors = _tensors()
    layout = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    writer = SafetensorsWriter(tmp_path / "out.safetensors", layout, {"format": "pt"})
    for key in reversed(list(tensors)):
        value = tensors[key]
        if value.dim() and value.shape[0] > 1:  # two row runs, the second first
            half = value.shape[0] // 2
            writer.write_rows(key, half, value[half:])
            writer.write_rows(key, 0, value[:half])
        else:
            writer.write(key, value)
    writer.close()
    loaded = load_file(tmp_path / "out.safetensors")
    for key, want in tensors.items():
        assert torch.equal(loaded[key], want), key


def test_writer_casts_and_refuses_bad_rows_and_missing_data(tmp_path):
    writer = SafetensorsWriter(tmp_path / "x.safetensors", {"a": (torch.bfloat16, (4, 3)), "b": (torch.float32, (2,))})
    writer.write("a", torch.ones(4, 3))  # float32 in, stored as bfloat16
    with pytest.raises(ValueError, match="do not fit"):
        writer.write_rows("a", 3, torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="no data was written for b"):
        writer.close()
    assert load_file(tmp_path / "x.safetensors")["a"].dtype == torch.bfloat16


@pytest.mark.parametrize("n", [2, 3, 96, 255, 256, 257, 600, 1024])
def test_fft_analysis_matches_scipy(n):
    """Every analysis path against scipy: the truncated basis product (few kept coefficients), scipy's DCT (a
    CPU, many kept) and the torch FFT (Makhoul) that runs on a GPU, exercised here on the CPU."""
    from zoo_plugins.transforms.dct import _dct_fft

    dct = catalog().transform("dct")
    x = torch.randn(4, n, 3, dtype=torch.float64)
    ref = scipy.fft.dct(x.numpy(), type=2, norm="ortho", axis=1)
    for keep in sorted({1, 96, n // 2, n // 2 + 1, n // 2 + 2, n - 1, n} & set(range(1, n + 1))):
        got = dct.analyze(x, 1, keep).numpy()
        np.testing.assert_allclose(got, ref[:, :keep], atol=1e-12, err_msg=f"n={n} keep={keep}")
        np.testing.assert_allclose(_dct_fft(x, 1, keep).numpy(), ref[:, :keep], atol=1e-12, err_msg=f"torch n={n}")
    got32 = dct.analyze(x.float(), 1, n)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, atol=2e-5)
    np.testing.assert_allclose(_dct_fft(x.float(), 1, n).numpy(), ref, atol=2e-5)


# -- extraction ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, perturbed_checkpoint) -> Path:
    torch.manual_seed(7)
    config = GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=300, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    return perturbed_checkpoint(GPT2LMHeadModel(config), folder=tmp_path_factory.mktemp("gpt2") / "src")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, perturbed_checkpoint) -> Path:
    torch.manual_seed(8)
    config = LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=200, max_position_embeddings=64, tie_word_embeddings=True)
    return perturbed_checkpoint(LlamaForCausalLM(config), folder=tmp_path_factory.mktemp("llama") / "src")


def _reference_coeffs(layers: list[np.ndarray], keep: float) -> np.ndarray:
    """FRONT's learngene by hand: per-layer z-score, orthonormal DCT over every axis (depth included), crop."""
    z = np.stack([(x - x.mean()) / x.std() for x in layers])
    coeffs = scipy.fft.dctn(z, type=2, norm="ortho")
    return coeffs[tuple(slice(0, int(np.ceil(n * keep))) for n in z.shape)]


def test_streaming_extraction_matches_a_scipy_reference_on_fused_transposed_weights(gpt2_dir):
    """c_attn ([in, 3 * out], Conv1D) is read once per layer, split into q, k, v and each gets FRONT's learngene."""
    checkpoint = from_local(gpt2_dir, "src")
    reader = checkpoint.tensors()
    assert isinstance(reader, SafetensorsReader)  # lazy: nothing is read until a gene needs it
    adapter = catalog().architecture("gpt2")
    records = {r.name: r for r in extract_groups(gene_groups(adapter, reader, checkpoint.config),
                                                 catalog().transform("dct"), {"*": 0.5}, {})}
    raw = load_file(gpt2_dir / "model.safetensors")
    prefix = "transformer." if "transformer.h.0.attn.c_attn.weight" in raw else ""
    for third, gene in enumerate(("attn.q.weight", "attn.k.weight", "attn.v.weight")):
        layers = [raw[f"{prefix}h.{i}.attn.c_attn.weight"].T[third * 64:(third + 1) * 64].reshape(4, 16, 64).double()
                  .numpy() for i in range(4)]
        want = _reference_coeffs(layers, 0.5)
        got = records[gene].coeffs.double().numpy()
        assert got.shape == want.shape == (2, 2, 8, 32)
        np.testing.assert_allclose(got, want, atol=2e-5)
    assert records["attn.q.weight"].source_shape == (4, 4, 16, 64)
    std = torch.tensor([float(raw[f"{prefix}h.{i}.mlp.c_fc.weight"].std(correction=0)) for i in range(4)])
    torch.testing.assert_close(records["mlp.up.weight"].std, std, rtol=1e-5, atol=0)


def test_parallel_extraction_equals_serial(llama_dir):
    checkpoint = from_local(llama_dir, "src")
    adapter = catalog().architecture("llama")
    dct = catalog().transform("dct")

    def run(workers: int) -> dict:
        groups = gene_groups(adapter, checkpoint.tensors(), checkpoint.config)
        return {r.name: r for r in extract_groups(groups, dct, {"*": 0.5}, {}, workers=workers)}

    serial, parallel = run(1), run(3)
    assert list(serial) == list(parallel) and "lm_head.weight" not in serial  # tied: stored once, as embed.tokens
    for name, record in serial.items():
        assert torch.equal(record.coeffs, parallel[name].coeffs), name
        assert torch.equal(record.std, parallel[name].std) and torch.equal(record.mean, parallel[name].mean)
    assert torch.get_num_threads() >= 1  # the worker pool restores torch's thread count


def test_lazy_and_in_memory_genomes_extract_the_same(gpt2_dir):
    checkpoint = from_local(gpt2_dir, "src")
    adapter = catalog().architecture("gpt2")
    dct = catalog().transform("dct")
    lazy = list(extract_groups(gene_groups(adapter, checkpoint.tensors(), checkpoint.config), dct, {"*": 0.5}, {}))
    genome = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    eager = list(extract_groups(genome_groups(genome), dct, {"*": 0.5}, {}))
    assert [r.name for r in lazy] == [r.name for r in eager if r.name in {x.name for x in lazy}]
    for a in lazy:
        b = next(r for r in eager if r.name == a.name)
        torch.testing.assert_close(a.coeffs, b.coeffs, rtol=1e-5, atol=1e-5)  # axis order may differ by layout: float rounding


def _hub_cache(cache: Path, repo_id: str, folder: Path, blob_name=None) -> None:
    """``folder`` laid out as huggingface_hub caches a download: ``snapshots/<rev>/<file>`` are links to
    ``blobs/<sha256 of the content>`` (``blob_name`` overrides the weights' blob name)."""
    import hashlib

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / revision).mkdir(parents=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        name = hashlib.sha256(data).hexdigest()
        if file.suffix == ".safetensors" and blob_name:
            name = blob_name
        (repo / "blobs" / name).write_bytes(data)
        (repo / "snapshots" / revision / file.name).symlink_to(Path("../../blobs") / name)


def test_a_hub_cache_download_is_hashed_by_its_blob_name(gpt2_dir, tmp_path, monkeypatch):
    """A model in the Hugging Face cache resolves offline by hub id (the real snapshot_download on local files),
    and its source sha256 is the blob's name, which the hub derives from the content: no second full read."""
    import hashlib

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _hub_cache(tmp_path / "cache", "zoo-test/tiny-gpt2", gpt2_dir)
    info = zoo.add_learngene("zoo-test/tiny-gpt2", registry=tmp_path / "r.db", keep=0.5)
    assert info.source == "zoo-test/tiny-gpt2"
    assert info.source_sha256 == hashlib.sha256((gpt2_dir / "model.safetensors").read_bytes()).hexdigest()

    # the name is what is believed (the content is not read to check it): a blob named by another hash shows it
    claimed = "ab" * 32
    _hub_cache(tmp_path / "cache2", "zoo-test/tiny-gpt2", gpt2_dir, blob_name=claimed)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache2"))
    assert zoo.add_learngene("zoo-test/tiny-gpt2", registry=tmp_path / "r2.db", keep=0.5).source_sha256 == claimed


# -- materialization -------------------------------------------------------------------------------------------


def _registry_with(folder: Path, tmp_path: Path, keep: float = 0.5) -> Path:
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(folder), keep=keep, name="src", registry=registry)
    return registry


@pytest.mark.parametrize("family,sizes", [
    ("gpt2", {}),
    ("gpt2", dict(layers=6, hidden=48, heads=3)),
    ("llama", dict(layers=2, hidden=32, heads=2, kv_heads=1)),
])
def test_streamed_folder_equals_the_in_memory_model(family, sizes, gpt2_dir, llama_dir, tmp_path):
    source = {"gpt2": gpt2_dir, "llama": llama_dir}[family]
    registry = _registry_with(source, tmp_path)
    model = zoo.materialize(learngene="src", registry=registry, device="cpu", **sizes)
    report = zoo.materialize_to_disk(tmp_path / "out", learngene="src", registry=registry, device="cpu", **sizes)
    assert report["model_class"] == type(model).__name__ and report["parameters"] == sum(
        p.numel() for p in model.parameters())
    written = json.loads((tmp_path / "out" / "zoo.json").read_text())
    assert written["learngene"] == "src" and "model.safetensors" in written["files"]
    loaded = type(model).from_pretrained(tmp_path / "out").eval()
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        if key in model.zoo_fresh_parameters:  # fresh init: its own draw, same family rule
            assert got[key].shape == want[key].shape
            continue
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    tokens = torch.randint(0, 200, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, model(tokens).logits)


def test_sharded_bfloat16_output_loads_with_from_pretrained(gpt2_dir, tmp_path):
    registry = _registry_with(gpt2_dir, tmp_path, keep=1.0)
    zoo.materialize_to_disk(tmp_path / "out", learngene="src", registry=registry, device="cpu", dtype="bfloat16",
                            max_shard_bytes=100_000)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and "model.safetensors.index.json" in files
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "out", dtype="auto")
    assert loaded.dtype == torch.bfloat16
    source = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    for key, value in source.state_dict().items():  # keep 1: the source itself, rounded to bfloat16
        torch.testing.assert_close(loaded.state_dict()[key].float(), value, rtol=1e-2, atol=1e-2, msg=key)


def test_cli_quiet_and_progress_bars_stay_out_of_pipes(gpt2_dir, tmp_path):
    registry = str(tmp_path / "r.db")
    runner = CliRunner()
    added = runner.invoke(cli, ["learngene", "add", str(gpt2_dir), "--name", "g", "--device", "cpu",
                                "--registry", registry])
    assert added.exit_code == 0, added.output
    assert "added learngene 'g'" in added.output and "gene/s" not in added.output  # not a terminal: no bar
    out = tmp_path / "out"
    made = runner.invoke(cli, ["materialize", "--from", "g", "--layers", "2", "--out", str(out), "--quiet",
                               "--dtype", "float16", "--registry", registry])
    assert made.exit_code == 0, made.output
    assert "float16" in made.output and "GPT2LMHeadModel" in made.output
    assert GPT2LMHeadModel.from_pretrained(out).config.n_layer == 2


def test_speed_benchmark_runs_at_smoke_size(tmp_path):
    """bench/speed.py end to end on a tiny checkpoint: every case runs in its own process and reports finite,
    positive timings and peak RSS (the numbers themselves mean nothing at this size)."""
    import importlib.util
    import math
    import sys

    path = Path(__file__).resolve().parents[1] / "bench" / "speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", path)
    speed = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = speed
    spec.loader.exec_module(speed)
    out = tmp_path / "speed.json"
    assert speed.main(["--smoke", "--json", str(out), "--work", str(tmp_path / "work")]) == 0
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {f"{case} ({cache})" for case in ("read", "add", "add (hub)", "extract")
                                   for cache in ("warm", "cold")} | {"random+save", "materialize"}
    for label, runs in result["rows"].items():
        for run in runs:
            assert math.isfinite(run["seconds"]) and run["seconds"] >= 0, label
            assert math.isfinite(run["peak_rss_mb"]) and run["peak_rss_mb"] > 50, label
    table = speed.render(result, "python bench/speed.py --smoke")
    assert table.count("| learngene add") == 4 and table.count("| of which the transforms") == 2
    assert "| materialize" in table


@pytest.mark.parametrize("layout", ["table", "transposed", "column-slice"])
def test_layers_are_transformed_in_slices_with_the_same_result(monkeypatch, layout):
    """Each transform pass runs over slices along another axis; the result equals one unsliced pass and a scipy
    reference of the z-scored layer, for contiguous tables and for views (transposed Conv1D weights, q of a fused
    qkv), where the slices are strided."""
    from zoo import extraction

    dct = catalog().transform("dct")
    torch.manual_seed(0)
    if layout == "table":  # a vocabulary: only the hidden axis is transformed
        x, axes = torch.randn(3000, 200) * 0.02 + 0.003, ("vocab", "hidden")
    elif layout == "transposed":
        x, axes = (torch.randn(400, 900) * 0.02 + 0.003).T, ("hidden", "mlp")
    else:
        x, axes = (torch.randn(300, 1200) * 0.02 + 0.003)[:, 400:800], ("hidden", "hidden")
    whole = extraction._standardize_and_analyze(x, axes, dct, {"*": 0.5}, {})
    monkeypatch.setattr(extraction, "SLICE_ELEMENTS", 5_000)
    before = x.clone()
    sliced = extraction._standardize_and_analyze(x, axes, dct, {"*": 0.5}, {})
    assert torch.equal(x, before)  # the source layer is never written to
    kept = tuple(n // 2 if role != "vocab" else n for n, role in zip(x.shape, axes))
    assert sliced[0].shape == whole[0].shape == kept
    torch.testing.assert_close(sliced[0], whole[0], rtol=0, atol=1e-6)
    z = (x.double() - x.double().mean()) / x.double().std(correction=0)
    want = scipy.fft.dctn(z.numpy(), type=2, norm="ortho", axes=[d for d, r in enumerate(axes) if r != "vocab"])
    np.testing.assert_allclose(sliced[0].numpy(), want[: kept[0], : kept[1]], atol=1e-4)  # float32
    np.testing.assert_allclose([float(sliced[1]), float(sliced[2])], [x.double().std(correction=0), x.double().mean()],
                               rtol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "column-slice", "mean-dominated", "odd-length"])
def test_layer_statistics_match_a_float64_reference(layout):
    """The fast std/mean (partial norms, float64 accumulation) against float64 two-pass statistics; a layer whose
    mean dwarfs its spread (a LayerNorm gain) takes the exact path and is right too."""
    from zoo.extraction import _layer_std_mean

    torch.manual_seed(1)
    x = {"contiguous": lambda: torch.randn(1000, 900) * 0.02,
         "transposed": lambda: (torch.randn(1000, 900) * 0.02).T,
         "column-slice": lambda: (torch.randn(700, 1800) * 0.02 + 0.01)[:, 600:1200],
         "mean-dominated": lambda: torch.randn(800, 800) * 1e-3 + 1.0,
         "odd-length": lambda: torch.randn(1_000_003) * 0.05 - 0.01}[layout]()
    std, mean = _layer_std_mean(x)
    want_std, want_mean = torch.std_mean(x.double(), correction=0)
    assert std.dtype == mean.dtype == torch.float32
    assert abs(float(std) / float(want_std) - 1) < 1e-6
    assert abs(float(mean) - float(want_mean)) < 1e-6 * (float(want_std) + abs(float(want_mean)))  # float32


def test_reader_maps_tensors_privately_and_unmaps_them_with_the_tensor(tmp_path):
    """A read tensor is backed by a private mapping: writing to it never reaches the file, and the mapping goes
    away with the last view of the tensor (the RSS of a streaming extraction stays one layer deep)."""
    save_file({"w": torch.arange(6000, dtype=torch.float32).reshape(60, 100)}, str(tmp_path / "m.safetensors"))

    def mappings() -> int:
        return sum("m.safetensors" in line for line in Path("/proc/self/maps").read_text().splitlines())

    reader = SafetensorsReader([tmp_path / "m.safetensors"])
    tensor = reader["w"]
    view = tensor.T[:3]
    tensor.add_(1)
    assert torch.equal(reader["w"], torch.arange(6000, dtype=torch.float32).reshape(60, 100))
    assert mappings() == 1
    del tensor
    assert mappings() == 1 and float(view[0, 0]) == 1.0  # a view keeps its mapping alive
    del view
    assert mappings() == 0


def test_lazy_registry_records_read_the_same_tensors(gpt2_dir, tmp_path):
    registry = _registry_with(gpt2_dir, tmp_path)
    with zoo.open_registry(registry) as reg:
        eager, lazy = reg.genes("src"), reg.genes("src", lazy=True)
        assert list(eager) == list(lazy)
        for name, record in eager.items():
            loaded = lazy[name].loaded()
            assert lazy[name].axes == record.axes and lazy[name].source_shape == record.source_shape
            assert torch.equal(loaded.coeffs, record.coeffs) and torch.equal(loaded.std, record.std)


def test_buffer_loader_gives_views_of_what_safetensors_wrote_and_refuses_what_it_would(tmp_path):
    from safetensors.torch import save

    from zoo.hf.safetensors_io import load_buffer

    tensors = _tensors()
    data = bytearray(save(tensors))
    got = load_buffer(data)
    assert sorted(got) == sorted(tensors)
    for key, want in tensors.items():
        assert got[key].dtype == want.dtype and got[key].shape == want.shape and torch.equal(got[key], want), key
    got["f32"].add_(1)  # views, not copies: the buffer changed with the tensor
    assert torch.equal(load_buffer(data)["f32"], tensors["f32"] + 1)
    good = bytes(save(tensors))
    for bad in (good[:-4], good + b"\0" * 8, good[:6], struct.pack("<Q", 2**40) + b"{}"):
        with pytest.raises(ValueError):
            load_buffer(bytearray(bad))
    # header entries the reference loader refuses: an unknown dtype, no offsets, a shape that is not numbers
    for entry in ({"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}, {"dtype": "F32", "shape": [1]},
                  {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 4]}):
        head = json.dumps({"t": entry}).encode()
        with pytest.raises(ValueError, match="header entry"):
            load_buffer(bytearray(struct.pack("<Q", len(head)) + head + b"\0" * 4))


def _layout_facts(layout) -> tuple:
    """Everything a written folder takes from a layout: entries in order, saved names, parameters, class, configs."""
    from zoo.hf import assemble

    generation = layout.generation_config
    return ([(key, tuple(t.shape), t.dtype) for key, t in layout.params.items()], assemble.saved_names(layout.params),
            layout.parameters, layout.parameter_count, layout.class_name, layout.config.to_json_string(),
            None if generation is None else generation.to_json_string())


@pytest.mark.parametrize("sizes", [{}, dict(layers=6, hidden=48, heads=3), dict(layers=1, ffn=40)])
def test_declared_layouts_are_their_classes_own(gpt2_dir, sizes):
    from zoo.hf import assemble

    sources = {"gpt2": gpt2_dir}  # a family that declares its class layout needs a tiny source here
    declaring = [a for a in catalog().architectures.values() if getattr(a.obj, "class_layout", None) is not None]
    assert {a.obj.name for a in declaring} == set(sources)
    for adapter in (a.obj for a in declaring):
        config = adapter.target_config(json.loads((sources[adapter.name] / "config.json").read_text()), **sizes)
        genes = [wm.gene for wm in adapter.weights]
        declared = assemble.declared_layout(adapter, config, genes)
        assert declared is not None and declared.model is None
        assert _layout_facts(declared) == _layout_facts(assemble.Layout.of(assemble.construct(adapter, config, "meta")))
        assert assemble.uncovered(declared, {p.key for ps in assemble.plan(
            adapter, config, declared.params, genes).values() for p in ps}) == []


def test_a_layout_is_declared_only_where_it_is_all_of_the_class(gpt2_dir, llama_dir):
    from zoo.hf import assemble

    gpt2, llama = catalog().architecture("gpt2"), catalog().architecture("llama")
    config = gpt2.target_config(json.loads((gpt2_dir / "config.json").read_text()))
    genes = [wm.gene for wm in gpt2.weights]
    assert assemble.declared_layout(gpt2, config, genes) is not None
    assert assemble.declared_layout(gpt2, config, genes[:-1]) is None  # a parameter without a gene
    assert assemble.declared_layout(gpt2, {**config, "tie_word_embeddings": False}, genes) is None
    classifier = {**config, "architectures": ["GPT2ForSequenceClassification"]}
    assert assemble.declared_layout(gpt2, classifier, genes) is None
    assert assemble.layout(gpt2, classifier, genes).class_name == "GPT2ForSequenceClassification"
    llama_config = llama.target_config(json.loads((llama_dir / "config.json").read_text()))
    assert assemble.declared_layout(llama, llama_config, [wm.gene for wm in llama.weights]) is None


def test_a_declared_layout_writes_the_folder_the_class_writes(gpt2_dir, tmp_path, monkeypatch):
    registry = _registry_with(gpt2_dir, tmp_path, keep=1.0)
    declared = zoo.materialize_to_disk(tmp_path / "declared", learngene="src", registry=registry, device="cpu")
    monkeypatch.setattr(type(catalog().architecture("gpt2")), "class_layout", None)
    built = zoo.materialize_to_disk(tmp_path / "class", learngene="src", registry=registry, device="cpu")
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        assert (tmp_path / "declared" / name).read_bytes() == (tmp_path / "class" / name).read_bytes(), name
    drop = ("out", "name", "command", "argv", "rebuild")
    assert {k: v for k, v in declared.items() if k not in drop} == {k: v for k, v in built.items() if k not in drop}
