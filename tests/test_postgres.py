"""A team registry on PostgreSQL: `--registry postgresql://...` works as a file does, tensors live in the database.

Runs against a real server: .ci/run starts one (scripts/start_postgres.sh) and exports ZOO_TEST_POSTGRES_URL; without
it the fixture starts one if PostgreSQL is installed, else these tests skip with the reason. The reliability tests
(concurrency, crashes, corruption, migrations) run on PostgreSQL too: see tests/test_reliability.py.
"""

from __future__ import annotations

import json
import re
import time

import torch
from click.testing import CliRunner
from sqlalchemy.engine import make_url
from test_reliability import execute, gene_hashes, run_forked, verified
from transformers import BertModel

import zoo
from zoo.cli import cli
from zoo.registry import Registry
from zoo.registry.store import to_url


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_round_trip(postgres_url, tiny_bert_dir, tmp_path):
    password = make_url(postgres_url).password
    added = run("learngene", "add", tiny_bert_dir, "--transform", "dct", "--name", "team-tiny", "--keep", "0.75",
                "--registry", postgres_url).output
    assert "added learngene 'team-tiny' (bert, dct, keep 0.75" in added
    listing = json.loads(run("learngene", "list", "--json", "--registry", postgres_url).output)
    assert [(i["name"], i["family"]) for i in listing] == [("team-tiny", "bert")]
    shown = json.loads(run("learngene", "show", "team-tiny", "--json", "--registry", postgres_url).output)
    assert {g["name"]: g["shape"] for g in shown["gene_summary"]}["attn.q.weight"] == [2, 2, 12, 24]
    out = tmp_path / "out"
    made = run("materialize", "--from", "team-tiny", "--layers", 3, "--hidden", 48, "--out", out,
               "--registry", postgres_url).output
    assert "materialized BertModel" in made
    model = BertModel.from_pretrained(out)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (3, 48)
    assert (out / "vocab.txt").read_text() == (tiny_bert_dir / "vocab.txt").read_text()  # assets from the database
    verified_out = run("verify", "--registry", postgres_url).output
    assert re.search(r": 1 learngenes, \d+ genes, 1 assets checked \([\d.]+ MiB\): OK\n$", verified_out), verified_out
    assert "***" in verified_out and password not in verified_out
    run("learngene", "rm", "team-tiny", "--registry", postgres_url)
    assert json.loads(run("learngene", "list", "--json", "--registry", postgres_url).output) == []


def test_tensors_are_kept_in_the_database(postgres_url, tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = zoo.add_learngene(str(tiny_bert_dir), name="in-db", registry=postgres_url)
    assert list(tmp_path.iterdir()) == []  # nothing written beside it: a teammate on another machine sees it all
    [(data_type,)] = execute(postgres_url, "SELECT data_type FROM information_schema.columns "
                                           "WHERE table_name = 'genes' AND column_name = 'data'")
    assert data_type == "bytea"
    [(stored,)] = execute(postgres_url, "SELECT sum(octet_length(data)) FROM genes")
    assert stored == info.nbytes > 0


def test_same_learngene_and_model_as_sqlite(postgres_url, tiny_bert_dir, tmp_path):
    sqlite_path = tmp_path / "r.db"
    for where in (sqlite_path, postgres_url):
        zoo.add_learngene(str(tiny_bert_dir), name="twin", keep=0.5, registry=where)
    assert gene_hashes(postgres_url, "twin") == gene_hashes(str(sqlite_path), "twin")
    a = zoo.materialize(learngene="twin", layers=3, hidden=40, heads=4, registry=sqlite_path, device="cpu")
    b = zoo.materialize(learngene="twin", layers=3, hidden=40, heads=4, registry=postgres_url, device="cpu")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_eight_adds_and_eight_materializes_at_once(postgres_url, tiny_bert_dir, tmp_path):
    zoo.add_learngene(str(tiny_bert_dir), name="seed", registry=postgres_url)
    commands = [["learngene", "add", tiny_bert_dir, "--name", f"t{i}", "--registry", postgres_url] for i in range(8)]
    commands += [["materialize", "--from", "seed", "--layers", 3, "--device", "cpu", "--out", tmp_path / f"m{i}",
                  "--registry", postgres_url] for i in range(8)]
    results = run_forked(commands, tmp_path)
    assert [code for code, _ in results] == [0] * 16, results
    with Registry(to_url(postgres_url)) as reg:
        assert sorted(i.name for i in reg.list()) == ["seed", *(f"t{i}" for i in range(8))]
    reference = gene_hashes(postgres_url, "seed")
    assert all(gene_hashes(postgres_url, f"t{i}") == reference for i in range(8))
    assert len({(tmp_path / f"m{i}" / "model.safetensors").read_bytes() for i in range(8)}) == 1
    assert verified(postgres_url) == []


def test_bad_server_urls_fail_fast_in_one_line_without_the_password(postgres_url):
    url = make_url(postgres_url)
    cases = {
        url.set(password="wrong-pass-123").render_as_string(hide_password=False): "password authentication failed",
        url.set(database="no_such_db").render_as_string(hide_password=False): 'database "no_such_db" does not exist',
        url.set(port=1).render_as_string(hide_password=False): "cannot open registry",
    }
    for bad, message in cases.items():
        started = time.monotonic()
        result = run("learngene", "list", "--registry", bad, ok=False)
        assert time.monotonic() - started < 15
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert message in result.output and "***" in result.output
        assert url.password not in result.output and "wrong-pass-123" not in result.output
