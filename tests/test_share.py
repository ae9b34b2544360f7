"""Sharing learngenes: export -> import round trips (SQLite, PostgreSQL, a Hugging Face cache read offline), the
no-op and name-clash rules, lineage, and reader commands on a registry on a read-only mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from zoo.cli import cli
from zoo.importance import Calibration
from zoo.registry import Registry
from zoo.registry.store import to_url
from zoo.registry.util import now, sha256
from zoo.share import MANIFEST, METADATA, read_artifact, stored_content_sha256


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def fingerprint(location, name: str) -> dict:
    """Everything a learngene is, as a registry returns it (hashes of every gene, asset and the calibration)."""
    with Registry(to_url(location), create=False) as reg:
        info = reg.get(name, detail=True)
        return {
            "genes": [(g["name"], g["sha256"], g["shape"], g["axes"]) for g in info.gene_summary],
            "fan_in": [g["fan_in"] for g in reg.stored_genes(name)],
            "assets": {k: sha256(v) for k, v in reg.assets(name).items()},
            "calibration": info.calibration, "refinement": info.refinement, "parent": info.parent,
            "meta": (info.family, info.source, info.source_sha256, info.source_config, info.transform,
                     info.transform_params, info.keep, info.dtype, info.created_at),
            "content": stored_content_sha256(reg, name),
        }


@pytest.fixture(scope="module")
def lineage_registry(tmp_path_factory, tiny_bert_dir) -> Path:
    """A registry with 'tiny' and a child 'tiny.refined' (parent link, refinement record, calibration scores)."""
    path = tmp_path_factory.mktemp("share") / "registry.db"
    zoo.add_learngene(str(tiny_bert_dir), name="tiny", registry=path)
    with Registry(to_url(path)) as reg:
        genes = reg.genes("tiny")
        genes["attn.q.weight"].coeffs = genes["attn.q.weight"].coeffs + 0.01  # refined: other genes, same shapes
        scores = Calibration({"hidden": torch.rand(32), "ffn": torch.rand(2, 64)}, {"data": "test", "tokens": 64})
        child = replace(reg.get("tiny"), name="tiny.refined", parent="tiny", created_at=now(),
                        refinement={"lambda": 1.0, "steps": 3, "task": "mlm", "data": "test"},
                        calibration=scores.to_bytes())
        reg.add(child, genes, reg.assets("tiny"))
    return path


@pytest.fixture(scope="module")
def exported(lineage_registry, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    for name in ("tiny", "tiny.refined"):
        out = run("learngene", "export", name, root / name, "--registry", lineage_registry).output
        assert f"exported learngene '{name}'" in out and "hf upload ORG/REPO" in out
    return {"tiny": root / "tiny", "refined": root / "tiny.refined"}


def test_export_is_a_self_describing_hub_folder(exported, lineage_registry):
    folder = exported["refined"]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert {"README.md", MANIFEST, METADATA, "calibration.safetensors", "assets/vocab.txt",
            "genes/attn.q.weight.safetensors"} <= set(files)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["files"]) == set(files) - {MANIFEST}  # every other part, with its sha256
    card = (folder / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: zoo" in front and '- "zoo"' in front and '- "learngene"' in front
    assert "zoo learngene import" in card and "zoo materialize --from tiny.refined" in card
    from huggingface_hub import ModelCard  # how the Hub reads the card's metadata

    data = ModelCard.load(folder / "README.md").data
    meta = json.loads((folder / METADATA).read_text())
    assert data.library_name == "zoo" and {"zoo", "learngene", "bert", meta["transform"]} <= set(data.tags)
    assert meta["parent"]["name"] == "tiny" and meta["lineage"] == ["tiny"]
    assert meta["refinement"]["steps"] == 3
    # each gene file is the registry's bytes: its sha256 is the gene's sha256 there
    with Registry(to_url(lineage_registry), create=False) as reg:
        stored = {g["name"]: g["sha256"] for g in reg.stored_genes("tiny.refined")}
    assert {g["name"]: manifest["files"][g["file"]]["sha256"] for g in meta["genes"]} == stored
    assert read_artifact(folder).content_sha256 == meta["content_sha256"]


def test_round_trip_into_sqlite_is_exact_and_keeps_lineage(exported, lineage_registry, tmp_path):
    target = tmp_path / "other.db"
    child = run("learngene", "import", exported["refined"], "--registry", target, ok=False)
    assert child.exit_code == 1 and child.output.count("\n") == 1
    assert "refined from 'tiny', which registry" in child.output and "--no-parent" in child.output
    assert not target.exists() or run("learngene", "list", "--json", "--registry", target).output.strip() == "[]"
    run("learngene", "import", exported["tiny"], "--registry", target)
    out = run("learngene", "import", exported["refined"], "--registry", target).output
    assert "imported learngene 'tiny.refined'" in out and "refined from 'tiny'" in out
    for name in ("tiny", "tiny.refined"):
        assert fingerprint(target, name) == fingerprint(lineage_registry, name)
    shown = run("learngene", "show", "tiny.refined", "--registry", target).output
    assert "lineage:    tiny.refined <- tiny" in shown and "refined:    FRONT+ lambda 1.0, 3 steps" in shown
    assert "OK" in run("verify", "--registry", target).output
    # a second export of the imported copy is the same artifact, file for file
    again = tmp_path / "again"
    run("learngene", "export", "tiny.refined", again, "--registry", target)
    for rel in json.loads((again / MANIFEST).read_text())["files"]:
        assert (again / rel).read_bytes() == (exported["refined"] / rel).read_bytes(), rel


def test_import_again_is_a_noop_and_a_name_clash_is_an_error(exported, tmp_path):
    target = tmp_path / "r.db"
    run("learngene", "import", exported["tiny"], "--registry", target)
    before = target.read_bytes()
    again = run("learngene", "import", exported["tiny"], "--registry", target).output
    assert "already in the registry with the same content" in again and "nothing was imported" in again
    assert target.read_bytes() == before
    # 'tiny.refined' exported under the taken name 'tiny': different content
    clash = tmp_path / "clash"
    shutil.copytree(exported["refined"], clash)
    (clash / METADATA).write_text((clash / METADATA).read_text().replace('"name": "tiny.refined"', '"name": "tiny"'))
    _rehash(clash)
    refused = run("learngene", "import", clash, "--no-parent", "--registry", target, ok=False)
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert "already has a different learngene named 'tiny'" in refused.output and "--name" in refused.output
    assert target.read_bytes() == before
    out = run("learngene", "import", clash, "--no-parent", "--name", "tiny-2", "--registry", target).output
    assert "imported learngene 'tiny-2'" in out
    assert fingerprint(target, "tiny-2")["parent"] is None
    # `learngene add` recognises an exported folder and imports it
    assert "already in the registry" in run("learngene", "add", exported["tiny"], "--registry", target).output


def _rehash(folder: Path) -> None:
    """Recompute the manifest after an edit, as someone forging an artifact would."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for rel in manifest["files"]:
        data = (folder / rel).read_bytes()
        manifest["files"][rel] = {"sha256": sha256(data), "size": len(data)}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def test_round_trip_sqlite_to_postgres_and_back(postgres_url, exported, lineage_registry, tmp_path):
    for key in ("tiny", "refined"):
        run("learngene", "import", exported[key], "--registry", postgres_url)
    for name in ("tiny", "tiny.refined"):
        assert fingerprint(postgres_url, name) == fingerprint(lineage_registry, name)
    back = tmp_path / "from-pg"
    run("learngene", "export", "tiny.refined", back, "--registry", postgres_url)
    back_db = tmp_path / "back.db"
    run("learngene", "import", exported["tiny"], "--registry", back_db)
    run("learngene", "import", back, "--registry", back_db)
    assert fingerprint(back_db, "tiny.refined") == fingerprint(lineage_registry, "tiny.refined")
    assert "same content" in run("learngene", "import", back, "--registry", postgres_url).output


def hf_cache(folder: Path, cache: Path, repo: str, commit: str = "a" * 40) -> Path:
    """``folder`` laid out as the Hugging Face cache stores a downloaded repository: blobs named by content,
    snapshot files linking to them, refs/main naming the commit."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo_dir / "blobs" / sha256(data)
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def _zoo(args: list, env: dict) -> subprocess.CompletedProcess:
    code = "from zoo.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **env}, timeout=120)


def test_import_from_the_hub_cache_offline(exported, lineage_registry, tmp_path):
    cache = tmp_path / "hub"
    snapshot = hf_cache(exported["tiny"], cache, "org/tiny-learngene")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "ZOO_REGISTRY": str(tmp_path / "r.db")}
    done = _zoo(["learngene", "import", "org/tiny-learngene"], env)
    assert done.returncode == 0, done.stderr
    assert "imported learngene 'tiny'" in done.stdout
    assert fingerprint(tmp_path / "r.db", "tiny") == fingerprint(lineage_registry, "tiny")
    added = _zoo(["learngene", "add", "org/tiny-learngene"], {**env, "ZOO_REGISTRY": str(tmp_path / "r2.db")})
    assert added.returncode == 0 and "imported learngene 'tiny'" in added.stdout, added.stderr
    assert fingerprint(tmp_path / "r2.db", "tiny") == fingerprint(lineage_registry, "tiny")
    # a snapshot missing a file, offline: one line, nothing stored
    next(snapshot.glob("genes/*.safetensors")).unlink()
    missing = _zoo(["learngene", "import", "org/tiny-learngene"], {**env, "ZOO_REGISTRY": str(tmp_path / "r3.db")})
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert "not all in the local cache" in missing.stderr
    assert not (tmp_path / "r3.db").exists()


# -- read-only storage ---------------------------------------------------------------------------------------------
@contextmanager
def read_only_mount(source: Path, mount: Path):
    """``source`` seen through a read-only bind mount at ``mount`` (what CI, running as root, still cannot write)."""
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({(bound.stderr.strip() or 'mount failed').splitlines()[-1]}); "
                    f"the read-only tests need root or CAP_SYS_ADMIN")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True, text=True)
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.strip()}")
        assert not os.access(mount, os.W_OK)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture()
def read_only_registry(lineage_registry, tmp_path) -> Path:
    (tmp_path / "rw").mkdir()
    shutil.copyfile(lineage_registry, tmp_path / "rw" / "registry.db")
    with read_only_mount(tmp_path / "rw", tmp_path / "ro") as mount:
        yield mount / "registry.db"


def test_reader_commands_work_on_a_read_only_mount(read_only_registry, exported, tmp_path):
    reg = read_only_registry
    before = reg.read_bytes()
    names = [i["name"] for i in json.loads(run("learngene", "list", "--json", "--registry", reg).output)]
    assert names == ["tiny", "tiny.refined"]
    assert "lineage:    tiny.refined <- tiny" in run("learngene", "show", "tiny.refined", "--registry", reg).output
    assert ": OK" in run("verify", "--registry", reg).output
    run("materialize", "--from", "tiny", "--layers", 3, "--device", "cpu", "--out", tmp_path / "m", "--registry", reg)
    assert (tmp_path / "m" / "model.safetensors").is_file()
    run("learngene", "export", "tiny.refined", tmp_path / "e", "--registry", reg)
    assert read_artifact(tmp_path / "e").content_sha256 == read_artifact(exported["refined"]).content_sha256
    for write in (["learngene", "rm", "tiny"], ["learngene", "import", exported["tiny"], "--name", "x"],
                  ["learngene", "add", tmp_path / "m", "--name", "y"],
                  ["refine", tmp_path / "m", "--data", "pydoc", "--steps", 1], ["db", "vacuum"]):
        refused = run(*write, "--registry", reg, ok=False)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
        assert "is read-only" in refused.output and "nothing was changed" in refused.output
    assert reg.read_bytes() == before
    assert sorted(p.name for p in reg.parent.iterdir()) == ["registry.db"]  # no -wal, -shm or lock file


def test_a_read_only_postgres_registry_reads_and_is_told_it_cannot_write(postgres_url, exported, tmp_path):
    """A read-only PostgreSQL (a hot standby, or sessions forced read-only as here): readers work, writes say why."""
    run("learngene", "import", exported["tiny"], "--registry", postgres_url)
    reader = postgres_url + "?options=-c%20default_transaction_read_only%3Don"
    assert "tiny" in run("learngene", "list", "--registry", reader).output
    run("learngene", "export", "tiny", tmp_path / "e", "--registry", reader)
    assert read_artifact(tmp_path / "e").content_sha256 == read_artifact(exported["tiny"]).content_sha256
    for write in (["learngene", "rm", "tiny"], ["learngene", "import", exported["refined"], "--no-parent"]):
        refused = run(*write, "--registry", reader, ok=False)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
        assert "is read-only (cannot execute" in refused.output and "nothing was changed" in refused.output
    assert [i["name"] for i in json.loads(run("learngene", "list", "--json", "--registry", postgres_url).output)] \
        == ["tiny"]


def test_rm_then_db_vacuum_gives_the_space_back(exported, tmp_path, tiny_bert_dir, postgres_url):
    import sqlite3

    reg = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), name="kept", keep=0.5, registry=reg)
    run("db", "vacuum", "--registry", reg)
    empty = reg.stat().st_size
    run("learngene", "import", exported["tiny"], "--registry", reg)
    run("learngene", "rm", "tiny", "--registry", reg)
    page = sqlite3.connect(reg).execute("PRAGMA page_size").fetchone()[0]
    assert reg.stat().st_size > empty + 10 * page  # rm alone keeps the freed pages in the file
    out = run("db", "vacuum", "--registry", reg).output
    assert out.startswith(f"vacuumed registry {reg}: ") and " MiB -> " in out
    assert abs(reg.stat().st_size - empty) <= 2 * page
    assert ": OK" in run("verify", "--registry", reg).output
    assert "(space is reusable)" in run("db", "vacuum", "--registry", postgres_url).output


def test_python_api(exported, lineage_registry, tmp_path):
    from zoo.share import export_learngene, import_learngene

    info = zoo.add_learngene(str(exported["tiny"]), registry=tmp_path / "r.db")  # recognised, imported as it is
    assert info.name == "tiny" and fingerprint(tmp_path / "r.db", "tiny") == fingerprint(lineage_registry, "tiny")
    done = import_learngene(str(exported["refined"]), registry=tmp_path / "r.db", name="child")
    assert done.imported and done.parent_linked and done.info.parent == "tiny"
    again = export_learngene("child", tmp_path / "child", registry=tmp_path / "r.db")
    assert again.content_sha256 == done.content_sha256 == read_artifact(exported["refined"]).content_sha256


def test_a_read_only_copy_with_unmerged_wal_writes(lineage_registry, tmp_path):
    """Copied while a writer had not checkpointed: with its -shm it reads (writes included), without it says why."""
    import sqlite3

    rw = tmp_path / "rw"
    rw.mkdir()
    shutil.copyfile(lineage_registry, tmp_path / "base.db")
    con = sqlite3.connect(tmp_path / "base.db")
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("UPDATE learngenes SET notes = 'in the wal' WHERE name = 'tiny'")
    con.commit()
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(tmp_path / f"base.db{suffix}", rw / f"registry.db{suffix}")
    con.close()
    with read_only_mount(rw, tmp_path / "ro") as mount:
        shown = json.loads(run("learngene", "show", "tiny", "--json", "--registry", mount / "registry.db").output)
        assert shown["notes"] == "in the wal"
    (rw / "registry.db-shm").unlink()
    with read_only_mount(rw, tmp_path / "ro2") as mount:
        refused = run("learngene", "list", "--registry", mount / "registry.db", ok=False)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
        assert "holds writes not yet merged into it, and its folder is read-only" in refused.output
