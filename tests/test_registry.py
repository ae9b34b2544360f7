"""The registry: schema version, the bundled example, atomic writes."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from alembic.script import ScriptDirectory

import zoo
from zoo.extraction import extract
from zoo.registry import Registry, open_registry
from zoo.registry.store import MIGRATIONS, _alembic_config, example_registry_path, to_url

EXAMPLE = Path(__file__).resolve().parents[1] / "registry.db.example"


def head_revision(reg: Registry) -> str:
    return ScriptDirectory.from_config(_alembic_config(reg.engine)).get_current_head()


def test_example_registry_is_at_head_and_holds_minilm_and_dinov2(tmp_path):
    copy = tmp_path / "example.db"
    shutil.copyfile(EXAMPLE, copy)
    con = sqlite3.connect(copy)
    (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    (mode,) = con.execute("PRAGMA journal_mode").fetchone()
    con.close()
    with Registry(to_url(copy)) as reg:
        assert revision == head_revision(reg)
        infos = reg.list()
    assert mode == "delete"  # no -wal/-shm sidecars in a clone
    assert sorted((i.name, i.family) for i in infos) == [("all-minilm-l6-v2.ordered-half", "bert"),
                                                         ("dinov2-small-imgfocus.ordered-half", "vit")]
    assert all(i.source_config["hidden_size"] == 384 for i in infos)
    assert EXAMPLE.stat().st_size <= 27_000_000  # about 25 MB: small enough for a clone (make_example_registry)


def test_default_registry_starts_from_the_example(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOO_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert example_registry_path() == EXAMPLE
    model = zoo.materialize("bert", layers=2, hidden=128, device="cpu")
    assert model.zoo_report["learngene"] == "all-minilm-l6-v2.ordered-half"
    assert (tmp_path / "data" / "zoo" / "registry.db").is_file()
    assert model.config.num_attention_heads == 4  # head size 32 kept


def test_failed_add_leaves_nothing(minilm_dir, tmp_path, monkeypatch):
    reg_path = tmp_path / "r.db"
    zoo.add_learngene(str(minilm_dir), name="first", registry=reg_path)

    from sqlalchemy.orm import Session

    def commit_then_die(self):
        self.flush()  # every row of the new learngene is written inside the transaction...
        raise RuntimeError("power cut before COMMIT")  # ...which never commits

    monkeypatch.setattr(Session, "commit", commit_then_die)
    with pytest.raises(RuntimeError, match="power cut"):
        zoo.add_learngene(str(minilm_dir), name="second", registry=reg_path)
    monkeypatch.undo()
    with open_registry(reg_path) as reg:
        assert [i.name for i in reg.list()] == ["first"]
        con = sqlite3.connect(reg_path)
        assert con.execute("SELECT count(*) FROM genes").fetchone()[0] == reg.get("first").genes
        con.close()


def test_damaged_gene_is_detected(minilm_dir, tmp_path):
    reg_path = tmp_path / "r.db"
    zoo.add_learngene(str(minilm_dir), name="victim", keep=0.25, registry=reg_path)
    con = sqlite3.connect(reg_path)
    (gene_id, data) = con.execute("SELECT id, data FROM genes WHERE name = 'mlp.up.weight'").fetchone()
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    con.execute("UPDATE genes SET data = ? WHERE id = ?", (bytes(flipped), gene_id))
    con.commit()
    con.close()
    with pytest.raises(zoo.RegistryError, match="learngene 'victim' gene 'mlp.up.weight' is damaged"):
        zoo.materialize(learngene="victim", registry=reg_path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    Registry(to_url(path)).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    con.commit()
    con.close()
    with pytest.raises(zoo.RegistryError, match="written by a newer zoo"):
        Registry(to_url(path))


def test_migrations_folder_has_one_head():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1


def test_extract_is_deterministic(minilm_dir):
    from zoo.sources import from_local

    checkpoint = from_local(minilm_dir, "m")
    adapter = zoo.catalog().architecture("bert")
    genome = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    dct = zoo.catalog().transform("dct")
    a = extract(genome, dct, {"*": 0.5}, {})
    b = extract(genome, dct, {"*": 0.5}, {})
    assert all((a[k].coeffs == b[k].coeffs).all() for k in a)


def test_older_schema_is_refused_then_upgrades_without_loss(minilm_dir, tmp_path):
    from alembic import command
    from click.testing import CliRunner

    from zoo.cli import cli

    path = tmp_path / "old.db"
    zoo.add_learngene(str(minilm_dir), name="kept", keep=0.25, registry=path)
    with Registry(to_url(path)) as reg:
        before = reg.genes("kept")
        command.downgrade(_alembic_config(reg.engine), "0001")  # as an older zoo left it
    with pytest.raises(zoo.RegistryError, match=r"at schema 0001.*zoo db upgrade --registry"):
        Registry(to_url(path))
    result = CliRunner().invoke(cli, ["db", "upgrade", "--registry", str(path)])
    assert result.exit_code == 0, result.output
    with Registry(to_url(path)) as reg:
        after = reg.genes("kept")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k].coeffs, after[k].coeffs) for k in before)
    assert after["attn.q.weight"].fan_in == 0  # unknown for old rows: the column's default


def test_schema_head_constant_matches_the_migrations(tmp_path):
    # opening a registry compares against SCHEMA_HEAD without importing alembic; it must be the real head
    from zoo.registry.store import SCHEMA_HEAD

    with open_registry(tmp_path / "r.db") as reg:
        assert head_revision(reg) == SCHEMA_HEAD
        assert reg.schema_revision() == (SCHEMA_HEAD, SCHEMA_HEAD)
