"""Content-addressed genes (zoo.registry.sharing): identical gene bytes are stored once across learngenes, `rm`
hands them on, `verify` checks the references, and migration 0005 moves existing registries over without losing a
byte. Each test runs on SQLite and PostgreSQL; the SIGKILL and concurrency tests are in tests/test_reliability.py."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_reliability import EXAMPLE, contents, execute, gene_hashes, names_in, run_forked, stored_bytes, verified

import zoo
from zoo.cli import cli
from zoo.registry import Registry
from zoo.registry.staging import drop_abandoned
from zoo.registry.store import _alembic_config, to_url
from zoo.registry.util import sha256


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "registry.db")
    return request.getfixturevalue("postgres_url")


def add(source, name: str, url: str, keep: float = 1.0) -> zoo.LearngeneInfo:
    return zoo.add_learngene(str(source), transform="dct", keep=keep, name=name, registry=url)


def distinct_bytes(url: str, name: str) -> int:
    """What learngene ``name``'s genes take stored once each (a learngene stores its own duplicate genes when it is
    added, but may come to share them once it holds bytes handed over by a removed one)."""
    genes = zoo.show_learngene(name, registry=url).gene_summary
    return sum({g["sha256"]: g["nbytes"] for g in genes}.values())


def references(url: str) -> int:
    [(count,)] = execute(url, "SELECT count(data_of) FROM genes")
    return count


def model_bytes(url: str, name: str) -> dict[str, torch.Tensor]:
    return zoo.materialize(learngene=name, layers=3, hidden=48, registry=url, device="cpu").state_dict()


def same_model(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def page_size(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA page_size").fetchone()[0]
    finally:
        con.close()


def test_two_adds_of_one_checkpoint_take_the_space_of_one_and_rm_vacuum_gives_it_back(tiny_bert_dir, tmp_path):
    reg = tmp_path / "r.db"
    first = add(tiny_bert_dir, "first", reg)
    CliRunner().invoke(cli, ["db", "vacuum", "--registry", str(reg)])
    alone = reg.stat().st_size
    page = page_size(reg)
    second = add(tiny_bert_dir, "second", reg)
    assert not reg.with_name("r.db-wal").exists()  # checkpointed on close: the file is all of it
    assert second.nbytes == first.nbytes > 20 * page  # a copy would be far more than the bound below
    assert stored_bytes(str(reg)) == first.nbytes  # the genes' bytes once, though both learngenes list them
    assert reg.stat().st_size - alone <= 2 * page  # the second learngene's rows only (metadata, its vocab.txt)
    assert gene_hashes(str(reg), "second") == gene_hashes(str(reg), "first")

    zoo.remove_learngene("second", registry=reg)  # the one that refers
    assert CliRunner().invoke(cli, ["db", "vacuum", "--registry", str(reg)]).exit_code == 0
    assert abs(reg.stat().st_size - alone) <= 2 * page
    add(tiny_bert_dir, "second", reg)
    reference = model_bytes(str(reg), "second")
    held_at = reg.stat().st_size
    zoo.remove_learngene("first", registry=reg)  # the one that holds the bytes: they move to 'second'
    assert reg.stat().st_size <= held_at + 2 * page  # into the pages the owner's rows free, not a new copy
    assert stored_bytes(str(reg)) == distinct_bytes(str(reg), "second") and verified(str(reg)) == []
    assert same_model(model_bytes(str(reg), "second"), reference)
    assert CliRunner().invoke(cli, ["db", "vacuum", "--registry", str(reg)]).exit_code == 0
    assert abs(reg.stat().st_size - alone) <= 2 * page


def test_rm_of_any_sharing_learngene_leaves_the_others_intact(registry_url, tiny_bert_dir):
    names = ["a", "b", "c"]
    for name in names:
        add(tiny_bert_dir, name, registry_url)
    half = add(tiny_bert_dir, "half", registry_url, keep=0.5)  # other bytes: shares nothing with them
    one = zoo.show_learngene("a", registry=registry_url).nbytes
    assert stored_bytes(registry_url) == one + half.nbytes
    before = contents(registry_url)
    reference = model_bytes(registry_url, "c")
    for gone in names[:2]:  # the owner first, then the heir it handed the bytes to
        zoo.remove_learngene(gone, registry=registry_url)
        assert verified(registry_url) == []
        left = contents(registry_url)
        assert left == {name: before[name] for name in before if name in left} and gone not in left
        assert stored_bytes(registry_url) == distinct_bytes(registry_url, "c") + half.nbytes
    assert same_model(model_bytes(registry_url, "c"), reference)
    zoo.remove_learngene("c", registry=registry_url)
    assert stored_bytes(registry_url) == half.nbytes and references(registry_url) == 0
    assert contents(registry_url) == {"half": before["half"]} and verified(registry_url) == []


def test_a_damaged_copy_is_never_shared(registry_url, tiny_bert_dir):
    add(tiny_bert_dir, "victim", registry_url)
    [(gene_id, data)] = execute(registry_url, "SELECT g.id, g.data FROM genes g JOIN learngenes l ON l.id = "
                                "g.learngene_id WHERE l.name = 'victim' AND g.name = 'mlp.up.weight'")
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x10
    execute(registry_url, "UPDATE genes SET data = :d WHERE id = :i", d=bytes(flipped), i=gene_id)
    add(tiny_bert_dir, "fresh", registry_url)  # finds the damaged bytes, checks them, stores its own
    [(owned,)] = execute(registry_url, "SELECT count(*) FROM genes g JOIN learngenes l ON l.id = g.learngene_id "
                         "WHERE l.name = 'fresh' AND g.data_of IS NULL")
    assert owned == 1
    model_bytes(registry_url, "fresh")  # reads back whole and right
    problems = verified(registry_url)
    assert len(problems) == 1 and "learngene 'victim' gene 'mlp.up.weight' is damaged" in problems[0]
    zoo.remove_learngene("fresh", registry=registry_url)
    add(tiny_bert_dir, "again", registry_url)  # the same: a damaged owner stays unshared
    assert len(verified(registry_url)) == 1


def test_verify_reports_every_broken_reference_in_one_line(registry_url, tiny_bert_dir):
    add(tiny_bert_dir, "owner", registry_url)
    add(tiny_bert_dir, "sharer", registry_url)
    add(tiny_bert_dir, "other", registry_url, keep=0.5)
    rows = {name: gene_id for gene_id, name in execute(
        registry_url, "SELECT g.id, l.name || '/' || g.name FROM genes g JOIN learngenes l ON l.id = g.learngene_id")}
    execute(registry_url, "UPDATE genes SET data_of = :o WHERE id = :i",  # points at other bytes
            o=rows["other/attn.q.weight"], i=rows["sharer/attn.q.weight"])
    execute(registry_url, "UPDATE genes SET data_of = :o WHERE id = :i",  # points at a reference
            o=rows["sharer/attn.v.weight"], i=rows["sharer/attn.k.weight"])
    execute(registry_url, "UPDATE genes SET data = :d WHERE id = :i",  # holds bytes besides its reference
            d=b"stray", i=rows["sharer/mlp.up.weight"])
    problems = verified(registry_url)
    assert len(problems) == 3 and all("\n" not in p for p in problems), problems
    assert "learngene 'sharer' gene 'attn.q.weight' shares the bytes of gene row" in problems[0]
    assert "which holds other bytes (sha256 " in problems[0]
    assert "gene 'attn.k.weight'" in problems[1] and "which holds none itself" in problems[1]
    assert "gene 'mlp.up.weight'" in problems[2] and "but holds 5 bytes of its own too" in problems[2]
    with pytest.raises(zoo.RegistryError, match="learngene 'sharer' gene 'attn.q.weight' is damaged"):
        zoo.materialize(learngene="sharer", registry=registry_url, device="cpu")


def test_rm_refuses_in_one_line_to_leave_a_reference_dangling(registry_url, tiny_bert_dir):
    """A reference to a row that is itself a reference (written by another tool) is not handed over, and the
    foreign key stops the delete: rm says so in one line and changes nothing."""
    add(tiny_bert_dir, "owner", registry_url)
    add(tiny_bert_dir, "sharer", registry_url)
    add(tiny_bert_dir, "other", registry_url, keep=0.5)
    execute(registry_url, "UPDATE genes SET data_of = (SELECT min(g.id) FROM genes g JOIN learngenes l ON l.id = "
            "g.learngene_id WHERE l.name = 'sharer') WHERE id = (SELECT min(g.id) FROM genes g JOIN learngenes l "
            "ON l.id = g.learngene_id WHERE l.name = 'other')")
    before = held(registry_url)
    result = CliRunner().invoke(cli, ["learngene", "rm", "sharer", "--registry", registry_url])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot remove learngene 'sharer': genes of other learngenes still share its bytes" in result.output
    assert "nothing was changed: run `zoo verify --registry" in result.output
    assert names_in(registry_url) == ["other", "owner", "sharer"] and held(registry_url) == before


def test_a_dangling_reference_is_reported_and_refused(tmp_path, tiny_bert_dir):
    """SQLite checks the foreign key only while zoo has it on: a registry written without it (another tool) can
    hold a reference to a row that is gone; verify says so, and reading it fails as damaged."""
    reg = tmp_path / "r.db"
    add(tiny_bert_dir, "owner", reg)
    add(tiny_bert_dir, "sharer", reg)
    con = sqlite3.connect(reg)
    con.execute("DELETE FROM genes WHERE id = (SELECT min(data_of) FROM genes)")
    con.commit()
    con.close()
    problems = verified(str(reg))
    assert any("foreign key check" in p for p in problems)
    assert any("shares the bytes of gene row" in p and "which does not exist" in p for p in problems), problems
    with pytest.raises(zoo.RegistryError, match="learngene 'sharer' gene '.*' is damaged"):
        zoo.materialize(learngene="sharer", registry=reg, device="cpu")


def test_an_heir_in_an_abandoned_add_hands_the_bytes_on_when_it_is_dropped(registry_url, tiny_bert_dir, tmp_path):
    """An add killed after its genes were staged refers to 'first'; 'second' (added after) too. Removing 'first'
    makes the abandoned add's rows the heirs (the oldest references); dropping them hands the bytes to 'second'."""
    add(tiny_bert_dir, "first", registry_url)
    [(code, _)] = run_forked([["learngene", "add", tiny_bert_dir, "--transform", "dct", "--name", "killed",
                               "--registry", registry_url]], tmp_path, env={"ZOO_TEST_KILL_AT": "stage:genes-written"})
    assert code == -9
    add(tiny_bert_dir, "second", registry_url)
    before = contents(registry_url)
    zoo.remove_learngene("first", registry=registry_url)
    [(staged_owners,)] = execute(registry_url, "SELECT count(*) FROM genes g JOIN learngenes l ON l.id = "
                                 "g.learngene_id WHERE l.name LIKE '~staging-%' AND g.data_of IS NULL")
    assert staged_owners > 0 and verified(registry_url) == []
    with Registry(to_url(registry_url)) as reg:
        assert drop_abandoned(reg, stale_after_s=0) == 1
    assert names_in(registry_url) == ["second"] and contents(registry_url) == {"second": before["second"]}
    assert stored_bytes(registry_url) == distinct_bytes(registry_url, "second") and verified(registry_url) == []


def test_a_staged_heir_that_publishes_onto_another_copy_takes_its_references_along(registry_url, tiny_bert_dir):
    """A staged add refers to 'first'; 'b' too; removing 'first' makes the staged rows heirs, which 'b' then refers
    to. 't', added meanwhile, sees no published copy and stores one. When the staged add publishes, its rows refer
    to 't''s, and so do 'b''s: no reference ever points at another reference."""
    add(tiny_bert_dir, "first", registry_url)
    with Registry(to_url(registry_url)) as reg:
        records, info = reg.genes("first"), replace(reg.get("first"), name="late")
        with reg.staging(info) as staged:
            for record in records.values():
                staged.put(record)
            add(tiny_bert_dir, "b", registry_url)
            zoo.remove_learngene("first", registry=registry_url)
            t = add(tiny_bert_dir, "t", registry_url)
            assert stored_bytes(registry_url) > t.nbytes  # the staged heirs' copy and 't''s
            staged.publish(info)
    assert names_in(registry_url) == ["b", "late", "t"] and verified(registry_url) == []
    reference = gene_hashes(registry_url, "t")
    assert all(gene_hashes(registry_url, name) == reference for name in ("b", "late"))
    [(two_hops,)] = execute(registry_url, "SELECT count(*) FROM genes g JOIN genes o ON o.id = g.data_of "
                            "WHERE o.data_of IS NOT NULL")
    assert two_hops == 0 and stored_bytes(registry_url) == t.nbytes


# -- migration 0005 ----------------------------------------------------------------------------------------------
def held(url: str, shared: bool = True) -> dict[tuple[str, str], tuple[str, str]]:
    """(learngene, gene) -> (recorded sha256, sha256 of the bytes it reads as), in plain SQL: at schema 0005 a
    reference reads as its owner's bytes, before it (``shared=False``) every row as its own."""
    data, join = ("coalesce(o.data, g.data)", " LEFT JOIN genes o ON o.id = g.data_of") if shared else ("g.data", "")
    rows = execute(url, f"SELECT l.name, g.name, g.sha256, {data} FROM genes g JOIN learngenes l ON "
                        f"l.id = g.learngene_id{join}")
    return {(lg, gene): (recorded, sha256(bytes(stored))) for lg, gene, recorded, stored in rows}


def test_a_registry_with_duplicated_genes_from_schema_0004_is_moved_over_without_losing_a_byte(registry_url,
                                                                                             tiny_bert_dir):
    from alembic import command

    for name in ("a", "b", "c"):
        add(tiny_bert_dir, name, registry_url)
    add(tiny_bert_dir, "half", registry_url, keep=0.5)
    with Registry(to_url(registry_url)) as reg:
        command.downgrade(_alembic_config(reg.engine), "0004")  # as zoo up to schema 0004 stored them: copies
    [(copies, listed)] = execute(registry_url, "SELECT sum(length(data)), sum(nbytes) FROM genes")
    assert copies == listed
    [(victim, data)] = execute(registry_url, "SELECT g.id, g.data FROM genes g JOIN learngenes l ON l.id = "
                               "g.learngene_id WHERE l.name = 'b' AND g.name = 'mlp.up.weight'")
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x10  # a damaged duplicate: it must keep its own bytes
    execute(registry_url, "UPDATE genes SET data = :d WHERE id = :i", d=bytes(flipped), i=victim)
    before = held(registry_url, shared=False)
    assert sum(recorded != stored for recorded, stored in before.values()) == 1

    result = CliRunner().invoke(cli, ["db", "upgrade", "--registry", registry_url])
    assert result.exit_code == 0, result.output
    assert held(registry_url) == before
    genes_of_one = zoo.show_learngene("a", registry=registry_url).genes
    assert references(registry_url) == 2 * genes_of_one - 1  # b and c refer to a, but for the damaged gene
    assert stored_bytes(registry_url) == copies - 2 * zoo.show_learngene("a", registry=registry_url).nbytes \
        + len(flipped)
    problems = verified(registry_url)
    assert len(problems) == 1 and "learngene 'b' gene 'mlp.up.weight' is damaged" in problems[0]


def test_the_examples_schema_0004_file_upgrades_without_losing_a_byte(tmp_path):
    """registry.db.example as the release before 0005 shipped it (each gene its own bytes): downgraded to 0004
    here, then upgraded; its two learngenes have one all-zero gene in common."""
    from alembic import command

    copy = tmp_path / "example.db"
    shutil.copyfile(EXAMPLE, copy)
    url = str(copy)
    shipped, readable = held(url), contents(url)
    with Registry(to_url(url)) as reg:
        command.downgrade(_alembic_config(reg.engine), "0004")
    assert held(url, shared=False) == shipped
    assert all(recorded == stored for recorded, stored in shipped.values())
    assert CliRunner().invoke(cli, ["db", "upgrade", "--registry", url]).exit_code == 0
    assert references(url) == 1
    assert held(url) == shipped and contents(url) == readable and verified(url) == []
