"""A user's first hour (issue 17): the advertised commands as written, Hub-ready and reproducible outputs, and the
everyday fixes. Sources are tiny random checkpoints laid out as the real ones are (a sentence-transformers folder,
a Hugging Face cache); the registry is real SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from zoo.cli import cli

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(91)]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def one_line_error(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT laid out as a sentence-transformers model, with a license in its model card and no
    pooler (so a BertModel target has fresh parameters: its pooler)."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("st") / "st-model"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "README.md").write_text("---\nlanguage: en\nlicense: mit\nlibrary_name: sentence-transformers\n"
                                      "tags:\n- sentence-transformers\n---\n\n# a tiny model\n")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                   "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return folder


@pytest.fixture(scope="module")
def st_registry(tmp_path_factory, st_dir) -> Path:
    path = tmp_path_factory.mktemp("st-reg") / "r.db"
    zoo.add_learngene(str(st_dir), name="st", registry=path)
    return path


# -- the advertised command as written ---------------------------------------------------------------------------
def test_no_out_writes_a_folder_named_after_the_model_and_refuses_to_replace_it(st_registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o027)
    try:
        made = run("materialize", "--arch", "bert", "--layers", 1, "--registry", st_registry)
    finally:
        os.umask(old)
    out = tmp_path / "bert-1x32"
    assert f"-> {out}" in made.output  # says where
    assert (out / "model.safetensors").is_file()
    assert out.stat().st_mode & 0o777 == 0o750  # the user's umask, not mkdtemp's 700
    assert not list(tmp_path.glob(".bert-1x32.tmp-*"))
    first = sha256(out / "model.safetensors")

    again = run("materialize", "--arch", "bert", "--layers", 1, "--seed", 1, "--registry", st_registry, ok=False)
    assert "already holds a model zoo wrote; pass --overwrite" in one_line_error(again)
    assert sha256(out / "model.safetensors") == first
    run("materialize", "--arch", "bert", "--layers", 1, "--seed", 1, "--overwrite", "--registry", st_registry)
    assert sha256(out / "model.safetensors") != first  # another seed: another pooler


def test_a_users_readme_is_kept_and_is_no_reason_to_refuse(st_registry, tmp_path):
    out = tmp_path / "hub-repo"
    out.mkdir()
    (out / "README.md").write_text("# my card\n")  # a Hub repo the user created, cloned empty
    (out / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    made = run("materialize", "--from", "st", "--layers", 1, "--out", out, "--registry", st_registry)
    assert "kept your .gitattributes, README.md" in made.output
    assert (out / "README.md").read_text() == "# my card\n" and (out / "config.json").is_file()
    assert (out / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"
    run("materialize", "--from", "st", "--layers", 2, "--out", out, "--registry", st_registry)  # and again
    assert (out / "README.md").read_text() == "# my card\n"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2

    # zoo's own card is zoo's to replace; once the user edits it, it is the user's
    ours = tmp_path / "ours"
    run("materialize", "--from", "st", "--layers", 1, "--out", ours, "--registry", st_registry)
    assert "initialized without training" in (ours / "README.md").read_text()
    run("materialize", "--from", "st", "--layers", 2, "--out", ours, "--registry", st_registry)
    assert "depth 2" in (ours / "README.md").read_text()
    (ours / "README.md").write_text((ours / "README.md").read_text() + "\nMy notes.\n")
    run("materialize", "--from", "st", "--layers", 1, "--out", ours, "--registry", st_registry)
    assert (ours / "README.md").read_text().endswith("My notes.\n")


# -- reproducible ------------------------------------------------------------------------------------------------
def test_seeded_and_rebuilt_from_zoo_json_byte_for_byte(st_registry, tmp_path):
    state = torch.random.get_rng_state()
    a = zoo.materialize_to_disk(tmp_path / "a", learngene="st", layers=1, hidden=16, heads=2, registry=st_registry,
                                device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    assert a["fresh_parameters"] == ["pooler.dense.bias", "pooler.dense.weight"]
    b = zoo.materialize_to_disk(tmp_path / "b", learngene="st", layers=1, hidden=16, heads=2, registry=st_registry,
                                device="cpu", seed=7)
    record = json.loads((tmp_path / "a" / "zoo.json").read_text())
    assert record["seed"] == 0 and b["seed"] == 7
    assert sha256(tmp_path / "a" / "model.safetensors") != sha256(tmp_path / "b" / "model.safetensors")
    for key in ("zoo_version", "learngene", "learngene_sha256", "transform", "keep", "strategy", "stats", "dtype",
                "device", "sizes", "command"):
        assert record.get(key) not in (None, ""), key
    assert record["zoo_version"] == zoo.__version__ and len(record["learngene_sha256"]) == 64
    assert record["rebuild"]["learngene"] == "st" and record["rebuild"]["hidden"] == 16
    assert record["command"].startswith("zoo materialize --from st --layers 1 --hidden 16 --heads 2 --strategy ")
    assert "--registry" not in record["command"]  # where the registry is stays out of a folder that may be published

    # the Python way: materialize_to_disk(out, **rebuild)
    zoo.materialize_to_disk(tmp_path / "again", registry=st_registry, **record["rebuild"])
    assert sha256(tmp_path / "again" / "model.safetensors") == sha256(tmp_path / "a" / "model.safetensors")
    # and the command it records, as typed
    words = record["command"].split()[1:]
    words[words.index("--out") + 1] = str(tmp_path / "cmd")
    run(*words, "--registry", st_registry)
    assert sha256(tmp_path / "cmd" / "model.safetensors") == sha256(tmp_path / "a" / "model.safetensors")
    assert json.loads((tmp_path / "cmd" / "zoo.json").read_text())["learngene_sha256"] == record["learngene_sha256"]
    # and --like: the options zoo.json records, except those typed again
    run("materialize", "--like", tmp_path / "a", "--out", tmp_path / "like", "--registry", st_registry)
    assert sha256(tmp_path / "like" / "model.safetensors") == sha256(tmp_path / "a" / "model.safetensors")
    run("materialize", "--like", tmp_path / "a" / "zoo.json", "--seed", 7, "--out", tmp_path / "like7",
        "--registry", st_registry)
    assert sha256(tmp_path / "like7" / "model.safetensors") == sha256(tmp_path / "b" / "model.safetensors")
    line = one_line_error(run("materialize", "--like", tmp_path / "a" / "README.md", "--registry", st_registry,
                              ok=False))
    assert "is not a zoo.json with a 'rebuild' record" in line
    line = one_line_error(run("materialize", "--like", tmp_path / "nothing", "--registry", st_registry, ok=False))
    assert "nothing does not exist; give a folder zoo materialized, or its zoo.json" in line

    # the same name, other content: refused, not silently other weights
    other = tmp_path / "other.db"
    zoo.add_learngene(str(tmp_path / "a"), name="st", registry=other)
    line = one_line_error(run("materialize", "--like", tmp_path / "a", "--out", tmp_path / "x", "--registry", other,
                              ok=False))
    assert "learngene 'st' in" in line and "is not the one this model was built from" in line


def test_dry_run_plans_and_writes_nothing_and_json_reports(st_registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    plan = run("materialize", "--from", "st", "--layers", 1, "--hidden", 16, "--heads", 2, "--dry-run",
               "--registry", st_registry).output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert "plan (nothing written" in plan and "BertModel: depth 1, hidden 16, heads 2" in plan
    assert "mlp.up.weight          depth 2->1, ffn 64->32, hidden 32->16" in plan
    assert "fresh       pooler.dense.bias, pooler.dense.weight" in plan
    as_json = json.loads(run("materialize", "--from", "st", "--layers", 1, "--hidden", 16, "--heads", 2, "--dry-run",
                             "--json", "--registry", st_registry).output)
    assert as_json["dry_run"] is True and as_json["out"] == str(tmp_path / "bert-1x16")
    assert as_json["disk_bytes"] == as_json["parameters"] * 4 and not (tmp_path / "bert-1x16").exists()
    made = json.loads(run("materialize", "--from", "st", "--layers", 1, "--hidden", 16, "--heads", 2, "--json",
                          "--registry", st_registry).output)
    assert made["parameters"] == as_json["parameters"] and made["fresh_parameters"] == as_json["fresh_parameters"]
    assert made["command"] == as_json["command"]
    assert json.loads((tmp_path / "bert-1x16" / "zoo.json").read_text())["learngene_sha256"] == made["learngene_sha256"]
    added = json.loads(run("learngene", "add", str(tmp_path / "bert-1x16"), "--json", "--registry",
                           tmp_path / "r.db").output)
    assert added["name"] == "bert-1x16.ordered" and added["family"] == "bert"


# -- Hub-ready outputs ---------------------------------------------------------------------------------------------
def hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """``folder``, subfolders included, laid out as huggingface_hub caches a download: ``refs/main`` names a
    revision, whose ``snapshots/<rev>/<path>`` are relative links to ``blobs/<sha256 of the content>``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "fedcba9876543210fedcba9876543210fedcba98"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs").mkdir()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / revision / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(os.path.relpath(blob, link.parent)))


def _hub_registry(tmp_path, monkeypatch, st_dir, repo_id="zoo-test/st-model"):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache(tmp_path / "hub", repo_id, st_dir)
    registry = tmp_path / "hub.db"
    run("learngene", "add", repo_id, "--registry", registry)
    return registry


def test_model_card_and_carried_files(st_dir, tmp_path, monkeypatch):
    from huggingface_hub import ModelCard
    from transformers import AutoModel, AutoTokenizer

    registry = _hub_registry(tmp_path / "c", monkeypatch, st_dir)  # the real snapshot_download, offline
    out = tmp_path / "m"
    run("materialize", "--arch", "bert", "--layers", 1, "--hidden", 16, "--heads", 2, "--out", out,
        "--registry", registry)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "zoo-test/st-model" and card.data.base_model_relation == "finetune"
    assert card.data.license == "mit"  # from the source's card
    assert card.data.library_name == "sentence-transformers" and "zoo" in card.data.tags
    assert card.data.pipeline_tag == "sentence-similarity"
    record = json.loads((out / "zoo.json").read_text())
    assert record["command"] in card.text and record["learngene_sha256"] in card.text
    assert "st-model.ordered" in card.text and "pooler.dense.weight" in card.text  # the learngene, the fresh parameters

    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 16  # fitted to the target's width
    assert (out / "2_Normalize").is_dir() and (out / "modules.json").is_file()
    assert (out / "sentence_bert_config.json").is_file()
    assert (out / "chat_template.jinja").read_text() == (st_dir / "chat_template.jinja").read_text()
    assert not (out / "zoo-source.json").exists()  # what zoo knows of the source stays in the registry
    AutoModel.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)


def test_vit_output_has_an_image_processor_for_pipeline(tmp_path):
    import numpy as np
    from PIL import Image
    from transformers import AutoImageProcessor, ViTConfig, ViTModel, pipeline

    source = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)).save_pretrained(source)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(source), name="v", registry=registry)
    out = tmp_path / "vit"
    run("materialize", "--from", "v", "--layers", 1, "--out", out, "--registry", registry)
    assert json.loads((out / "zoo.json").read_text())["generated_files"] == ["preprocessor_config.json"]
    processor = AutoImageProcessor.from_pretrained(out)
    image = Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8))
    assert tuple(processor(image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 32, 32)
    features = pipeline("image-feature-extraction", model=str(out), device="cpu")(image)
    assert np.asarray(features).shape[-1] == 32
    from huggingface_hub import ModelCard

    assert ModelCard.load(out / "README.md").data.pipeline_tag == "image-feature-extraction"

    # a source's own processor is carried, its fixed size following the target's image size
    (source / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}, "image_mean": [0.1] * 3,
        "image_std": [0.2] * 3, "do_resize": True, "do_normalize": True, "do_rescale": True}))
    zoo.add_learngene(str(source), name="v2", registry=registry)
    run("materialize", "--from", "v2", "--set", "img_size=48", "--out", tmp_path / "vit48", "--registry", registry)
    carried = json.loads((tmp_path / "vit48" / "preprocessor_config.json").read_text())
    assert carried["size"] == {"height": 48, "width": 48} and carried["image_mean"] == [0.1] * 3
    assert json.loads((tmp_path / "vit48" / "zoo.json").read_text())["generated_files"] == []
    processor = AutoImageProcessor.from_pretrained(tmp_path / "vit48")
    assert tuple(processor(image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 48, 48)


def test_gguf_license_and_default_names(tmp_path, minilm_dir, smollm2_gguf):
    from zoo.sources import resolve
    from zoo_plugins.sources.gguf_reader import _gguf_info

    assert _gguf_info(smollm2_gguf) == {"license": "apache-2.0"}
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("config.json", "vocab.txt"):
        (loose / name).write_bytes((minilm_dir / name).read_bytes())
    (loose / "minilm.safetensors").symlink_to(minilm_dir / "model.safetensors")
    checkpoint = resolve(str(loose / "minilm.safetensors"), {})
    assert zoo.api.default_learngene_name(checkpoint, "dct") == "minilm.dct"  # the file, not its folder
    (loose / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    assert zoo.api.default_learngene_name(resolve(str(loose / "model.safetensors"), {}), "dct") == "loose.dct"


# -- everyday use --------------------------------------------------------------------------------------------------
def test_everyday_fixes(st_registry, tmp_path):
    # a password in a registry URL never reaches zoo.json's record of the command typed
    import click

    from zoo.cli import _typed_args

    typed = getattr(cli, "typed_args", None)
    cli.typed_args = ["--registry", "postgresql://me:s3cret@db.example/zoo", "materialize", "--arch", "bert"]
    try:
        with click.Context(cli):
            recorded = _typed_args()
    finally:
        cli.typed_args = typed
    assert recorded[1] == "postgresql://me:***@db.example/zoo" and recorded[2:] == ["materialize", "--arch", "bert"]

    # the global --registry, as the README shows it; the command's own still wins
    listing = run("--registry", st_registry, "learngene", "list").output
    assert "st" in listing
    assert run("--registry", tmp_path / "none.db", "learngene", "list", "--registry", st_registry).exit_code == 0
    # --family takes aliases and rejects names that are no family
    assert "st" in run("learngene", "list", "--family", "bert", "--registry", st_registry).output
    assert "no learngenes yet" in run("learngene", "list", "--family", "gpt", "--registry", st_registry).output
    line = one_line_error(run("learngene", "list", "--family", "xyz", "--registry", st_registry, ok=False))
    assert "unknown family 'xyz'; valid choices:" in line and "gpt2" in line and "bert" in line
    # a name that is not there is not damage
    line = one_line_error(run("verify", "nope", "--registry", st_registry, ok=False))
    assert "unknown learngene 'nope'" in line and "DAMAGED" not in line
    # a width the source's heads do not fit: the source's head count, and what to pass
    line = one_line_error(run("materialize", "--from", "st", "--hidden", 25, "--out", tmp_path / "x",
                              "--registry", st_registry, ok=False))
    assert "its 2 heads" in line and "pass --heads, one of: 1, 5, 25" in line and "--heads 2" not in line


def test_keep_shows_what_a_wavelet_level_stores(st_dir, tmp_path):
    registry = tmp_path / "r.db"
    added = run("learngene", "add", st_dir, "--transform", "dwt", "--level", 1, "--registry", registry).output
    assert "keep 0.5 (level 1)" in added  # the level overrides --keep (1 by default): each level halves an axis
    row = next(line for line in run("learngene", "list", "--registry", registry).output.splitlines()
               if line.startswith("st-model.dwt"))
    assert "0.5 (level 1)" in row
    assert "keep:       0.5 (level 1)" in run("learngene", "show", "st-model.dwt", "--registry", registry).output


def test_a_timm_checkpoint_of_another_model_names_the_real_cause(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    file = tmp_path / "small.safetensors"  # ViT-S weights, given as ViT-Ti
    save_file(timm.create_model("vit_small_patch16_224", depth=2, weight_init="skip").state_dict(), str(file))
    line = one_line_error(run("learngene", "add", f"vit-tiny@{file}", "--registry", tmp_path / "r.db", ok=False))
    assert "size mismatch for" in line and "torch.Size([1, 1, 384])" in line and "more problems" in line
    assert line.rstrip().endswith("name the timm model it was saved from (MODEL@FILE)")


def test_quiet_silences_transformers_too(st_registry, tmp_path, monkeypatch):
    import importlib

    import huggingface_hub.utils
    import transformers.utils.logging as hf_logging

    hub_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module (the package exports a class)

    monkeypatch.setattr(hub_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)  # as a user's shell has it (conftest sets 1)
    verbosity = hf_logging.get_verbosity()
    hf_logging.enable_progress_bar()
    assert hf_logging.is_progress_bar_enabled() and not huggingface_hub.utils.are_progress_bars_disabled()
    try:
        run("materialize", "--from", "st", "--layers", 1, "--quiet", "--out", tmp_path / "q", "--registry", st_registry)
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert not hf_logging.is_progress_bar_enabled() and huggingface_hub.utils.are_progress_bars_disabled()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def test_ctrl_c_exits_130(st_registry, monkeypatch):
    def interrupted(*args, **kwargs):  # what SIGINT raises in the middle of a command
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.api, "list_learngenes", interrupted)
    assert run("learngene", "list", "--registry", st_registry, ok=False).exit_code == 130


def test_python_m_zoo(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "zoo", "--version"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "zoo, version" in done.stdout, done.stderr


def test_zoo_help_examples_run_as_written(tmp_path, monkeypatch):
    """On the bundled registry, offline, in a fresh directory: every example of `zoo --help` but the one that
    names the user's own model folder."""
    import shlex
    import shutil

    example = ROOT / "registry.db.example"
    if not example.is_file():
        pytest.skip("no registry.db.example in this tree (scripts/ build it)")
    shutil.copyfile(example, tmp_path / "registry.db")
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.db"))
    monkeypatch.chdir(tmp_path)
    examples = [line.strip()[len("zoo "):] for line in cli.help.splitlines() if line.strip().startswith("zoo ")]
    runnable = [e for e in examples if "./my-model" not in e]
    assert len(runnable) >= 4 and len(examples) - len(runnable) == 1
    for example in runnable:
        run(*shlex.split(example, comments=True))
    assert sha256(tmp_path / "bert-again" / "model.safetensors") == sha256(tmp_path / "bert-4x256" / "model.safetensors")
    assert (tmp_path / "vit-tiny" / "preprocessor_config.json").is_file()


# -- packaging -----------------------------------------------------------------------------------------------------
def test_a_wheel_carries_the_example_registry_and_runs_the_main_job(tmp_path):
    """``pip wheel .`` holds registry.db.example; installed from it (not editable, run outside the source tree),
    a first run copies it into the user's data directory and the README's main job works."""
    import zipfile

    example = ROOT / "registry.db.example"
    if not example.is_file():
        pytest.skip("no registry.db.example in this tree (scripts/ build it)")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("zoo_learngenes-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert archive.getinfo("zoo/example/registry.db.example").file_size == example.stat().st_size
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                                str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "ZOO_EXAMPLE_REGISTRY")}
    env.update(PYTHONPATH=str(site), XDG_DATA_HOME=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    job = ("import zoo, sys; assert zoo.__file__.startswith(sys.argv[1]), zoo.__file__; from zoo.cli import main; "
           "sys.argv[1:] = sys.argv[2:]; main()")
    made = subprocess.run([sys.executable, "-c", job, str(site), "materialize", "--arch", "bert", "--layers", "1",
                           "--hidden", "64", "--heads", "2", "--device", "cpu", "-q"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "using learngene 'all-minilm-l6-v2" in made.stdout and (tmp_path / "bert-1x64" / "config.json").is_file()
    assert list((tmp_path / "data").rglob("registry.db"))  # the first-run copy


# -- on demand -----------------------------------------------------------------------------------------------------
def test_a_missing_family_is_added_from_its_default_hub_source(st_registry, tmp_path, monkeypatch):
    """``zoo materialize --arch gpt`` on a registry without GPT-2: the learngene is added from openai-community/gpt2
    in a Hugging Face cache (laid out as a download leaves it, offline); with no cached copy, one line."""
    import shutil

    import huggingface_hub.constants
    from transformers import GPT2Config, GPT2LMHeadModel

    registry = tmp_path / "r.db"
    shutil.copyfile(st_registry, registry)  # bert only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    failed = run("materialize", "--arch", "gpt", "--layers", 1, "--registry", registry, ok=False)
    line = one_line_error(failed)
    assert "has no gpt2 learngene (it has: bert)" in line and "openai-community/gpt2" in line
    assert "use --arch bert" in line and not (tmp_path / "gpt2-1x32").exists()
    assert [i.name for i in zoo.list_learngenes(registry=registry)] == ["st"]

    source = tmp_path / "gpt2-src"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16)).save_pretrained(source)
    hub_cache(tmp_path / "hub", "openai-community/gpt2", source)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    made = run("materialize", "--arch", "gpt", "--layers", 1, "--registry", registry)
    assert "has no gpt2 learngene: adding one from openai-community/gpt2" in made.output
    assert "using learngene 'gpt2.ordered'" in made.output
    assert zoo.show_learngene("gpt2.ordered", registry=registry).source == "openai-community/gpt2"
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2-1x32").config.n_layer == 1
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "gpt2-1x32" / "README.md")
    assert card.data.base_model == "openai-community/gpt2" and card.data.pipeline_tag == "text-generation"


def test_deit_from_the_hub_cache_offline_and_a_timm_card(tmp_path, monkeypatch):
    """``zoo learngene add deit-tiny`` resolves timm's repo id from a Hugging Face cache (no network), and a
    model written for timm gets a card that says so."""
    timm = pytest.importorskip("timm")
    import huggingface_hub.constants
    from huggingface_hub import ModelCard
    from safetensors.torch import save_file

    hub_id = timm.models.get_pretrained_cfg("deit_tiny_patch16_224").hf_hub_id
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    save_file(timm.create_model("deit_tiny_patch16_224", weight_init="skip").state_dict(),
              str(weights / "model.safetensors"))
    hub_cache(tmp_path / "hub", hub_id, weights)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    registry = tmp_path / "r.db"
    run("learngene", "add", "deit-tiny", "--registry", registry)
    assert zoo.show_learngene(f"{hub_id.split('/')[-1]}.ordered", registry=registry).source == hub_id
    out = tmp_path / "deit"
    run("materialize", "--arch", "vit", "--layers", 2, "--set", "format=timm", "--out", out, "--registry", registry)
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "timm" and card.data.base_model == hub_id
    assert "timm.create_model(" in card.text and not (out / "preprocessor_config.json").exists()
