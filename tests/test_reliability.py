"""Registry reliability: concurrent processes, SIGKILL at every step of a write, corruption, migrations.

Each test runs on SQLite and on PostgreSQL (skipped, with the reason, where no server can be started; .ci/run
starts one). Processes are real: `zoo` console-script subprocesses where the brief is "N users at once", and forked
children running the same CLI entry point where many runs are needed (a fork skips the ~3 s of imports).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from sqlalchemy import text

import zoo
from zoo.cli import cli
from zoo.registry import Registry
from zoo.registry.store import _alembic_config, to_url
from zoo.registry.verify import verify

ZOO = Path(sys.executable).with_name("zoo")
EXAMPLE = Path(__file__).resolve().parents[1] / "registry.db.example"


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "registry.db")
    return request.getfixturevalue("postgres_url")


def _cli_child(args: list[str], env: dict[str, str], log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # pytest replaced sys.stdout
    os.environ.update(env)
    torch.set_num_threads(1)
    cli.main(args, prog_name="zoo")


def run_forked(commands: list[list], tmp_path: Path, env: dict[str, str] | None = None,
               timeout: float = 120) -> list[tuple[int, str]]:
    """Run ``zoo`` CLI commands in forked processes, all at once; (exit code, output) each (-9: SIGKILLed)."""
    ctx = multiprocessing.get_context("fork")
    procs = []
    for args in commands:
        log = tmp_path / f"proc-{uuid.uuid4().hex[:8]}.log"
        procs.append((ctx.Process(target=_cli_child, args=([str(a) for a in args], env or {}, str(log))), log))
    for proc, _ in procs:
        proc.start()
    results = []
    for proc, log in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
        results.append((proc.exitcode, log.read_text() if log.exists() else ""))
    return results


def gene_hashes(url: str, name: str) -> dict[str, str]:
    with Registry(to_url(url), create=False) as reg:
        return {g["name"]: g["sha256"] for g in reg.get(name, detail=True).gene_summary}


def names_in(url: str) -> list[str]:
    with Registry(to_url(url), create=False) as reg:
        return sorted(i.name for i in reg.list())


def verified(url: str) -> list[str]:
    with Registry(to_url(url), create=False, check_schema=False, read_only=True) as reg:
        return verify(reg).problems


def contents(url: str) -> dict[str, dict[str, str]]:
    """Every published learngene's genes as the registry reads them back: name -> gene -> sha256 of the bytes."""
    with Registry(to_url(url), create=False) as reg:
        return {info.name: {g["name"]: hashlib.sha256(g["data"]).hexdigest()
                            for g in reg.stored_genes(info.name, data=True)} for info in reg.list()}


def stored_bytes(url: str) -> int:
    """The genes' bytes the registry holds (each shared gene once)."""
    [(total,)] = execute(url, "SELECT coalesce(sum(length(data)), 0) FROM genes")
    return total


def execute(url: str, sql: str, **params) -> list:
    with Registry(to_url(url), create=False, check_schema=False) as reg, reg.engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return result.all() if result.returns_rows else []


def spawn(*args) -> subprocess.Popen:
    """The real `zoo` console script in a new process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.Popen([str(ZOO), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def assert_clean_output(output: str) -> None:
    assert "database is locked" not in output and "Traceback" not in output, output


# -- 1. concurrency ----------------------------------------------------------------------------------------------
def test_eight_adds_and_eight_materializes_at_once(tmp_path, tiny_bert_dir):
    """Real `zoo` processes: 8 adds (two of them racing for a taken name) and 8 materializes on one SQLite file,
    released together after the test held the write lock while they started."""
    reg = tmp_path / "shared.db"
    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=reg)
    adds = [f"tiny-{i}" for i in range(6)] + ["tiny-0", "tiny-0"]
    holder = sqlite3.connect(reg, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # every writer must wait (busy timeout), readers must not
    started = time.monotonic()  # (a writer waits 30 s, then retries: the lock is released within 20 s)
    procs = [spawn("learngene", "add", tiny_bert_dir, "--name", name, "--registry", reg) for name in adds]
    makers = [spawn("materialize", "--from", "seed", "--layers", 3, "--hidden", 48, "--device", "cpu",
                    "--out", tmp_path / f"m{i}", "--registry", reg) for i in range(8)]
    try:
        while time.monotonic() < started + 20 and any(p.poll() is None for p in makers):
            time.sleep(0.2)  # readers are not blocked by the held lock; writers queue up behind it
        holder.execute("COMMIT")
        holder.close()
        made = [(p.wait(timeout=600), p.stdout.read()) for p in makers]
        added = [(name, p.wait(timeout=600), p.stdout.read()) for name, p in zip(adds, procs)]
    finally:
        for p in procs + makers:
            p.kill()
            p.wait()

    for _, out in made:
        assert_clean_output(out)
    for name, code, out in added:
        assert_clean_output(out)
        if code == 0:
            assert f"added learngene '{name}'" in out
        else:  # the only acceptable failure: losing the race for a taken name, said in one line
            assert code == 1 and out.strip().count("\n") == 0 and f"'{name}' already exists" in out, out
    winners = sorted(name for name, code, _ in added if code == 0)
    assert winners == [f"tiny-{i}" for i in range(6)]  # tiny-0 exactly once
    assert names_in(reg) == sorted(["seed", *winners])  # nothing lost
    reference = gene_hashes(reg, "seed")
    assert all(gene_hashes(reg, n) == reference for n in winners)  # every learngene complete
    assert verified(reg) == []
    models = {(tmp_path / f"m{i}" / "model.safetensors").read_bytes() for i in range(8)}
    assert len(models) == 1  # 8 identical models: every reader saw the complete seed


def test_a_writer_locked_out_retries_then_says_busy(tmp_path, tiny_bert_dir, monkeypatch):
    """With the busy timeout cut to 1 s: a lock held for 1.5 s is ridden out by a retry; one held for good gives
    a one-line "busy, try again" (never SQLite's "database is locked") and leaves the registry as it was."""
    import threading

    import zoo.registry.store as store

    reg = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=reg)
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 1)
    monkeypatch.setattr(store, "BUSY_RETRIES", 2)
    holder = sqlite3.connect(reg, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(1.5, holder.execute, ["COMMIT"]).start()
    zoo.add_learngene(str(tiny_bert_dir), name="patient", registry=reg)  # waits 1 s, retries, gets in
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(cli, ["learngene", "add", str(tiny_bert_dir), "--name", "late",
                                          "--registry", str(reg)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"cannot add learngene 'late': registry {reg} is busy: another process kept it locked for over 1 s " \
           "(3 tries); try again" in result.output
    assert_clean_output(result.output)
    assert names_in(reg) == ["patient", "seed"]


def test_parallel_adds_with_postgres_or_first_creation(registry_url, tiny_bert_dir, tmp_path):
    """8 processes add different learngenes to a registry that does not exist yet: the schema is created once
    (file lock / advisory lock), every add lands."""
    results = run_forked([["learngene", "add", tiny_bert_dir, "--name", f"t{i}", "--registry", registry_url]
                          for i in range(8)], tmp_path)
    for code, out in results:
        assert_clean_output(out)
        assert code == 0, out
    assert names_in(registry_url) == [f"t{i}" for i in range(8)]
    assert verified(registry_url) == []
    with Registry(to_url(registry_url)) as reg:
        current, head = reg.schema_revision()
    assert current == head


def test_parallel_first_run_of_the_default_registry(tmp_path, monkeypatch):
    """8 first runs at once copy the bundled example into the user's data dir exactly once, never half."""
    monkeypatch.delenv("ZOO_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    con = sqlite3.connect(EXAMPLE)
    expected = sorted(name for (name,) in con.execute("SELECT name FROM learngenes"))
    con.close()
    results = run_forked([["learngene", "list", "--json"]] * 8, tmp_path)
    for code, out in results:
        assert code == 0, out
        assert sorted(i["name"] for i in json.loads(out)) == expected and expected
    assert [p.name for p in (tmp_path / "data" / "zoo").iterdir() if p.name.startswith(".registry-")] == []


# -- 2. crashes --------------------------------------------------------------------------------------------------
KILL_POINTS = ["stage:learngene-row", "stage:gene-0", "stage:gene-7", "stage:genes-written", "publish:before-commit",
               "publish:after-commit"]


def test_sigkill_during_add_never_leaves_a_partial_learngene(registry_url, tiny_bert_dir, tmp_path):
    from zoo.registry.staging import drop_abandoned

    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=registry_url)
    reference = gene_hashes(registry_url, "seed")
    add = ["learngene", "add", tiny_bert_dir, "--name", "victim", "--registry", registry_url]
    for point in KILL_POINTS:
        [(code, out)] = run_forked([add], tmp_path, env={"ZOO_TEST_KILL_AT": point})
        assert code == -signal.SIGKILL, (point, out)
        assert verified(registry_url) == [], point  # opens, integrity ok, no orphan genes
        if point == "publish:after-commit":  # committed before the kill: complete
            assert names_in(registry_url) == ["seed", "victim"]
            assert gene_hashes(registry_url, "victim") == reference
            zoo.remove_learngene("victim", registry=registry_url)
        else:
            assert names_in(registry_url) == ["seed"], point  # the staged rows stay hidden
            assert len(execute(registry_url, "SELECT id FROM learngenes WHERE name LIKE '~staging-%'")) == 1, point
        [(code, out)] = run_forked([add], tmp_path)  # the same add then succeeds
        assert code == 0, (point, out)
        assert gene_hashes(registry_url, "victim") == reference
        zoo.remove_learngene("victim", registry=registry_url)
        with Registry(to_url(registry_url)) as reg:  # what the kill left is removed once it is stale
            assert drop_abandoned(reg, stale_after_s=0) == (0 if point == "publish:after-commit" else 1)
        assert execute(registry_url, "SELECT count(*) FROM genes WHERE learngene_id NOT IN "
                                     "(SELECT id FROM learngenes WHERE name = 'seed')") == [(0,)], point
    assert gene_hashes(registry_url, "seed") == reference


def test_a_failed_add_leaves_nothing_and_a_taken_name_fails_before_extracting(tiny_bert_dir, tmp_path, monkeypatch):
    """An error in the middle of an add (here: the third gene cannot be stored) removes its staged rows at once;
    adding under a taken name fails up front, leaving the stored learngene as it was."""
    from zoo.registry import staging

    registry = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=registry)
    reference = gene_hashes(str(registry), "seed")
    put = staging.StagedLearngene.put

    def failing_put(self, record):
        if self.genes == 2:
            raise OSError("disk full (simulated)")
        put(self, record)

    monkeypatch.setattr(staging.StagedLearngene, "put", failing_put)
    with pytest.raises(OSError, match="disk full"):
        zoo.add_learngene(str(tiny_bert_dir), name="victim", registry=registry)
    monkeypatch.undo()
    assert execute(str(registry), "SELECT name FROM learngenes") == [("seed",)]
    assert verified(str(registry)) == []

    calls = []
    monkeypatch.setattr(staging.StagedLearngene, "put", lambda self, record: calls.append(record))
    with pytest.raises(zoo.DuplicateNameError, match="seed"):
        zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=registry)
    assert calls == [] and gene_hashes(str(registry), "seed") == reference


def test_sigkill_during_rm_and_migration(registry_url, tiny_bert_dir, tmp_path):
    from alembic import command

    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=registry_url)
    reference = gene_hashes(registry_url, "seed")
    [(code, _)] = run_forked([["learngene", "rm", "seed", "--registry", registry_url]], tmp_path,
                             env={"ZOO_TEST_KILL_AT": "rm:before-commit"})
    assert code == -signal.SIGKILL and gene_hashes(registry_url, "seed") == reference

    with Registry(to_url(registry_url)) as reg:
        command.downgrade(_alembic_config(reg.engine), "0001")
    [(code, _)] = run_forked([["db", "upgrade", "--registry", registry_url]], tmp_path,
                             env={"ZOO_TEST_KILL_AT": "migrate:before-commit"})
    assert code == -signal.SIGKILL
    assert execute(registry_url, "SELECT version_num FROM alembic_version") == [("0001",)]  # rolled back whole
    with pytest.raises(zoo.RegistryError, match="zoo db upgrade"):
        Registry(to_url(registry_url))
    [(code, out)] = run_forked([["db", "upgrade", "--registry", registry_url]], tmp_path)
    assert code == 0, out
    assert gene_hashes(registry_url, "seed") == reference and verified(registry_url) == []


# -- 3. corruption -----------------------------------------------------------------------------------------------
def _flip_in_file(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0 and data.find(needle, at + 1) == -1
    data[at + len(needle) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_detected_and_never_repaired(registry_url, tiny_bert_dir, tmp_path):
    for name in ("good", "victim"):
        zoo.add_learngene(str(tiny_bert_dir), name=name, keep=1.0 if name == "victim" else 0.5,
                          registry=registry_url)
    [(gene_id, data)] = execute(registry_url, "SELECT g.id, g.data FROM genes g JOIN learngenes l ON "
                                "l.id = g.learngene_id WHERE l.name = 'victim' AND g.name = 'mlp.up.weight'")
    if registry_url.startswith("postgresql"):  # bit rot inside the database server's storage
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x10
        execute(registry_url, "UPDATE genes SET data = :d WHERE id = :i", d=bytes(flipped), i=gene_id)
    else:  # bit rot in the file itself, under SQLite's feet
        _flip_in_file(Path(registry_url), bytes(data)[len(data) // 2 - 32: len(data) // 2 + 32])
    execute(registry_url, "UPDATE assets SET data = :d WHERE filename = 'vocab.txt' AND learngene_id = "
            "(SELECT id FROM learngenes WHERE name = 'good')", d=b"[PAD]\nrewritten\n")
    before = Path(registry_url).read_bytes() if not registry_url.startswith("postgresql") else None

    with pytest.raises(zoo.RegistryError, match="learngene 'victim' gene 'mlp.up.weight' is damaged"):
        zoo.materialize(learngene="victim", registry=registry_url, device="cpu")
    with pytest.raises(zoo.RegistryError, match="learngene 'good' asset 'vocab.txt' is damaged"):
        zoo.materialize(learngene="good", registry=registry_url, device="cpu", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(cli, ["materialize", "--from", "victim", "--out", str(tmp_path / "o"),
                                      "--registry", registry_url])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "learngene 'victim' gene 'mlp.up.weight' is damaged" in result.output

    result = CliRunner().invoke(cli, ["verify", "--registry", registry_url])
    assert result.exit_code == 1, result.output
    damaged = [line for line in result.output.splitlines() if line.startswith("DAMAGED")]
    assert len(damaged) == 2
    assert "DAMAGED: learngene 'good' asset 'vocab.txt' is damaged" in damaged[0]  # in registry order
    assert "DAMAGED: learngene 'victim' gene 'mlp.up.weight' is damaged" in damaged[1]
    assert "2 problem(s) found; nothing was changed" in result.output
    assert CliRunner().invoke(cli, ["verify", "good", "--registry", registry_url]).exit_code == 1
    assert CliRunner().invoke(cli, ["verify", "victim", "--registry", registry_url]).exit_code == 1
    if before is not None:
        assert Path(registry_url).read_bytes() == before  # verify and the failed reads changed nothing
    assert len(verified(registry_url)) == 2  # still damaged: nothing repaired itself


def test_truncated_database_is_detected(tiny_bert_dir, tmp_path):
    """SQLite notices a file shorter than its header says at the first read, so no learngene can be named: every
    command says the registry is damaged and what to do, verify fails, nothing is rewritten."""
    path = tmp_path / "r.db"
    for i in range(3):
        zoo.add_learngene(str(tiny_bert_dir), name=f"lg{i}", keep=1.0, registry=path)
    assert not path.with_name("r.db-wal").exists()  # checkpointed on close: everything is in the main file
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 4096)  # the last page lost
    damaged = path.read_bytes()
    result = CliRunner().invoke(cli, ["verify", "--registry", str(path)])
    assert result.exit_code == 1 and "DAMAGED: " in result.output and "nothing was changed" in result.output
    for args in (["materialize", "--from", "lg2", "--out", str(tmp_path / "o")], ["learngene", "list"]):
        result = CliRunner().invoke(cli, [*args, "--registry", str(path)])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"registry {path} is damaged (database disk image is malformed)" in result.output
        assert "`zoo verify --registry" in result.output
    assert path.read_bytes() == damaged and not (tmp_path / "o").exists()


# -- 4. migrations -----------------------------------------------------------------------------------------------
def _earlier_revisions() -> list[str]:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from zoo.registry.store import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    return [rev.revision for rev in script.walk_revisions() if rev.revision != script.get_current_head()]


@pytest.mark.parametrize("revision", _earlier_revisions())
def test_every_earlier_schema_upgrades_without_loss(registry_url, tiny_bert_dir, revision):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from zoo.registry.models import Base

    zoo.add_learngene(str(tiny_bert_dir), transform="dct", name="kept", registry=registry_url)
    reference = gene_hashes(registry_url, "kept")
    with Registry(to_url(registry_url)) as reg:
        command.downgrade(_alembic_config(reg.engine), revision)  # as that older zoo left it
    with pytest.raises(zoo.RegistryError, match=rf"at schema {revision}, .*`zoo db upgrade --registry "):
        Registry(to_url(registry_url))
    [problem] = verified(registry_url)  # verify reads old schemas too: only the version is wrong
    assert problem.startswith(f"schema is at {revision}, this zoo's is ")
    result = CliRunner().invoke(cli, ["learngene", "list", "--registry", registry_url])
    assert result.exit_code == 1 and "zoo db upgrade" in result.output
    result = CliRunner().invoke(cli, ["db", "upgrade", "--registry", registry_url])
    assert result.exit_code == 0, result.output
    assert gene_hashes(registry_url, "kept") == reference
    model = zoo.materialize(learngene="kept", registry=registry_url, device="cpu", layers=3)
    assert model.config.num_hidden_layers == 3
    with Registry(to_url(registry_url)) as reg, reg.engine.connect() as conn:  # the migrated schema = the models
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


@pytest.mark.parametrize("revision", _earlier_revisions())
def test_empty_registry_at_an_earlier_schema_upgrades(registry_url, tiny_bert_dir, revision):
    from alembic import command

    with Registry(to_url(registry_url), check_schema=False) as reg:
        command.upgrade(_alembic_config(reg.engine), revision)
    assert CliRunner().invoke(cli, ["db", "upgrade", "--registry", registry_url]).exit_code == 0
    zoo.add_learngene(str(tiny_bert_dir), name="new", registry=registry_url)
    assert names_in(registry_url) == ["new"]


def test_newer_schema_is_refused_everywhere(registry_url, tiny_bert_dir):
    zoo.add_learngene(str(tiny_bert_dir), name="kept", registry=registry_url)
    execute(registry_url, "UPDATE alembic_version SET version_num = '9999_future'")
    for args in (["learngene", "list"], ["db", "upgrade"], ["materialize", "--arch", "bert", "--out", "x"]):
        result = CliRunner().invoke(cli, [*args, "--registry", registry_url])
        assert result.exit_code == 1, result.output
        assert "written by a newer zoo (schema 9999_future" in result.output and "pip install -U" in result.output
    assert execute(registry_url, "SELECT version_num FROM alembic_version") == [("9999_future",)]
    result = CliRunner().invoke(cli, ["verify", "--registry", registry_url])
    assert result.exit_code == 1 and "schema is at 9999_future" in result.output


def test_example_registry_verifies(tmp_path):
    digest = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    result = CliRunner().invoke(cli, ["verify", "--registry", str(EXAMPLE)])
    assert result.exit_code == 0 and result.output.endswith(": OK\n"), result.output
    assert hashlib.sha256(EXAMPLE.read_bytes()).hexdigest() == digest  # verify does not even switch to WAL
    assert not EXAMPLE.with_name("registry.db.example-wal").exists()


def test_rm_removes_every_row_and_unlinks_children(registry_url, tiny_bert_dir):
    zoo.add_learngene(str(tiny_bert_dir), name="parent", registry=registry_url)
    zoo.add_learngene(str(tiny_bert_dir), name="child", parent="parent", registry=registry_url)
    assert zoo.show_learngene("child", registry=registry_url).parent == "parent"
    zoo.remove_learngene("parent", registry=registry_url)
    assert zoo.show_learngene("child", registry=registry_url).parent is None
    [(genes, assets)] = execute(registry_url, "SELECT (SELECT count(*) FROM genes), (SELECT count(*) FROM assets)")
    assert (genes, assets) == (zoo.show_learngene("child", registry=registry_url).genes, 1)
    assert verified(registry_url) == []


# -- 5. imports (zoo learngene import, tests/test_share.py) --------------------------------------------------------
def test_sigkill_during_import_never_leaves_a_partial_learngene(registry_url, tiny_bert_dir, tmp_path):
    source = tmp_path / "source.db"
    zoo.add_learngene(str(tiny_bert_dir), name="victim", registry=source)
    reference = gene_hashes(str(source), "victim")
    assert CliRunner().invoke(cli, ["learngene", "export", "victim", str(tmp_path / "art"), "--registry",
                                    str(source)]).exit_code == 0
    zoo.add_learngene(str(tiny_bert_dir), name="seed", keep=0.5, registry=registry_url)
    imp = ["learngene", "import", tmp_path / "art", "--registry", registry_url]
    for point in KILL_POINTS:
        [(code, out)] = run_forked([imp], tmp_path, env={"ZOO_TEST_KILL_AT": point})
        assert code == -signal.SIGKILL, (point, out)
        assert verified(registry_url) == [], point
        committed = point == "publish:after-commit"
        assert names_in(registry_url) == (["seed", "victim"] if committed else ["seed"]), point
        [(code, out)] = run_forked([imp], tmp_path)  # the same import then succeeds (or finds it done)
        assert code == 0 and ("already in the registry" if committed else "imported learngene") in out, (point, out)
        assert gene_hashes(registry_url, "victim") == reference
        zoo.remove_learngene("victim", registry=registry_url)


def test_eight_imports_of_one_artifact_at_once(registry_url, tiny_bert_dir, tmp_path):
    source = tmp_path / "source.db"
    zoo.add_learngene(str(tiny_bert_dir), name="shared", registry=source)
    assert CliRunner().invoke(cli, ["learngene", "export", "shared", str(tmp_path / "art"), "--registry",
                                    str(source)]).exit_code == 0
    zoo.add_learngene(str(tiny_bert_dir), name="seed", keep=0.5, registry=registry_url)  # schema in place
    results = run_forked([["learngene", "import", tmp_path / "art", "--registry", registry_url]] * 8, tmp_path)
    assert [code for code, _ in results] == [0] * 8, results
    assert sum("imported learngene 'shared'" in out for _, out in results) >= 1
    assert all("imported learngene" in out or "already in the registry" in out for _, out in results), results
    assert names_in(registry_url) == ["seed", "shared"]
    assert gene_hashes(registry_url, "shared") == gene_hashes(str(source), "shared")
    assert execute(registry_url, "SELECT count(*) FROM learngenes WHERE name LIKE '~staging-%'") == [(0,)]
    assert verified(registry_url) == []


# -- 6. shared genes (zoo.registry.sharing, tests/test_shared_genes.py) ---------------------------------------------
def _add_dct(source, name: str, url: str, keep: float = 1.0) -> zoo.LearngeneInfo:
    return zoo.add_learngene(str(source), transform="dct", keep=keep, name=name, registry=url)


def test_sigkill_during_an_rm_that_hands_shared_genes_over(registry_url, tiny_bert_dir, tmp_path):
    """'seed' holds the bytes 'twin' shares: killed after handing them to 'twin', or just before the commit, the rm
    leaves every learngene byte-identical and verify clean; then it succeeds, and 'twin' materializes as before."""
    for name in ("seed", "twin"):
        _add_dct(tiny_bert_dir, name, registry_url)
    _add_dct(tiny_bert_dir, "other", registry_url, keep=0.5)
    before, stored = contents(registry_url), stored_bytes(registry_url)
    [(refs,)] = execute(registry_url, "SELECT count(data_of) FROM genes")
    assert refs == zoo.show_learngene("twin", registry=registry_url).genes
    model = zoo.materialize(learngene="twin", layers=3, registry=registry_url, device="cpu").state_dict()
    rm = ["learngene", "rm", "seed", "--registry", registry_url]
    for point in ("rm:handed-over", "rm:before-commit"):
        [(code, out)] = run_forked([rm], tmp_path, env={"ZOO_TEST_KILL_AT": point})
        assert code == -signal.SIGKILL, (point, out)
        assert verified(registry_url) == [] and contents(registry_url) == before, point
        assert execute(registry_url, "SELECT count(data_of) FROM genes") == [(refs,)], point
    [(code, out)] = run_forked([rm], tmp_path)
    assert code == 0, out
    assert contents(registry_url) == {k: v for k, v in before.items() if k != "seed"}
    assert verified(registry_url) == [] and stored_bytes(registry_url) <= stored
    again = zoo.materialize(learngene="twin", layers=3, registry=registry_url, device="cpu").state_dict()
    assert again.keys() == model.keys() and all(torch.equal(again[k], model[k]) for k in model)


def test_six_adds_of_one_checkpoint_at_once_store_it_once(registry_url, tiny_bert_dir, tmp_path):
    """Forked adds of the same checkpoint, all staging at once: each publish turns what another stored meanwhile
    into references (PostgreSQL: publishes of one sha256 queue on an advisory lock), so one copy is left."""
    other = _add_dct(tiny_bert_dir, "other", registry_url, keep=0.5)  # the schema in place, bytes shared with none
    results = run_forked([["learngene", "add", tiny_bert_dir, "--transform", "dct", "--name", f"t{i}",
                           "--registry", registry_url] for i in range(6)], tmp_path)
    for code, out in results:
        assert_clean_output(out)
        assert code == 0, out
    reference = gene_hashes(registry_url, "t0")
    assert all(gene_hashes(registry_url, f"t{i}") == reference for i in range(6))
    assert verified(registry_url) == []
    assert execute(registry_url, "SELECT count(*) FROM learngenes WHERE name LIKE '~staging-%'") == [(0,)]
    one = zoo.show_learngene("t0", registry=registry_url).nbytes
    assert stored_bytes(registry_url) == one + other.nbytes


def test_rms_and_adds_of_shared_genes_at_once(registry_url, tiny_bert_dir, tmp_path):
    """Three rms of learngenes that share their bytes, racing three adds of the same checkpoint: every command
    succeeds, the learngene left and the new ones read back byte-identical, verify is clean, and nothing refers to a
    reference."""
    for i in range(4):
        _add_dct(tiny_bert_dir, f"s{i}", registry_url)
    other = _add_dct(tiny_bert_dir, "other", registry_url, keep=0.5)
    before = contents(registry_url)
    commands = [["learngene", "rm", f"s{i}", "--registry", registry_url] for i in range(3)]
    commands += [["learngene", "add", tiny_bert_dir, "--transform", "dct", "--name", f"t{i}", "--registry",
                  registry_url] for i in range(3)]
    for code, out in run_forked(commands, tmp_path):
        assert_clean_output(out)
        assert code == 0, out
    after = contents(registry_url)
    assert sorted(after) == ["other", "s3", "t0", "t1", "t2"]
    assert all(after[name] == before["s3"] for name in ("s3", "t0", "t1", "t2")) and after["other"] == before["other"]
    assert verified(registry_url) == []
    assert execute(registry_url, "SELECT count(*) FROM genes g JOIN genes o ON o.id = g.data_of "
                                 "WHERE o.data_of IS NOT NULL") == [(0,)]
    if not registry_url.startswith("postgresql"):  # one write at a time: never a second copy
        assert stored_bytes(registry_url) <= zoo.show_learngene("s3", registry=registry_url).nbytes + other.nbytes


def test_a_publish_waits_for_a_concurrent_publish_of_the_same_genes(registry_url, tiny_bert_dir, monkeypatch):
    """Two staged adds of one checkpoint hold their own copies; the first publish is held open before its commit.
    The second publish waits for it (SQLite: the write lock; PostgreSQL: the advisory lock on the genes' sha256s)
    and then refers to its copy, instead of keeping a second one."""
    import threading
    from dataclasses import replace

    import zoo.registry.staging as staging

    _add_dct(tiny_bert_dir, "seed", registry_url)
    with Registry(to_url(registry_url)) as reg:
        records, info = reg.genes("seed"), reg.get("seed")
    zoo.remove_learngene("seed", registry=registry_url)
    inside, release = threading.Event(), threading.Event()
    crash_point = staging.crash_point

    def pause_first(name: str) -> None:
        if name == "publish:before-commit" and threading.current_thread().name == "first":
            inside.set()
            release.wait(60)
        crash_point(name)

    monkeypatch.setattr(staging, "crash_point", pause_first)
    regs = [Registry(to_url(registry_url)) for _ in range(2)]
    stages = [reg.staging(replace(info, name=name)) for reg, name in zip(regs, ("first", "second"))]
    staged = [stage.__enter__() for stage in stages]
    for one in staged:
        for record in records.values():
            one.put(record)
    assert stored_bytes(registry_url) == 2 * info.nbytes  # nothing published to share with yet
    threads = [threading.Thread(target=one.publish, args=(one.info,), name=one.info.name) for one in staged]
    threads[0].start()
    assert inside.wait(60)
    threads[1].start()
    threads[1].join(2)
    waited = threads[1].is_alive()
    release.set()
    for thread in threads:
        thread.join(60)
    for stage in stages:
        stage.__exit__(None, None, None)
    for reg in regs:
        reg.close()
    assert waited
    assert names_in(registry_url) == ["first", "second"] and verified(registry_url) == []
    assert gene_hashes(registry_url, "second") == gene_hashes(registry_url, "first")
    assert stored_bytes(registry_url) == info.nbytes
