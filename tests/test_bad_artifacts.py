"""Bad input to `zoo learngene import`: an artifact is untrusted. Each bad one is refused in one line, exit 1, no
traceback, and the registry file is byte-identical afterwards. Most cases are forged consistently (the manifest
and the gene table rehashed after the edit), so it is the structural check that must catch them, not a hash."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from zoo.cli import cli
from zoo.registry.util import sha256
from zoo.share import MANIFEST, METADATA, content_sha256

MARKER = Path("/tmp") / f"zoo-pickle-ran-{os.getpid()}"


class Payload:
    """Unpickling this would create MARKER: proof that a pickle was never loaded."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_bert_dir) -> Path:
    root = tmp_path_factory.mktemp("artifact")
    zoo.add_learngene(str(tiny_bert_dir), name="tiny", registry=root / "src.db")
    result = CliRunner().invoke(cli, ["learngene", "export", "tiny", str(root / "tiny"), "--registry",
                                      str(root / "src.db")])
    assert result.exit_code == 0, result.output
    return root / "tiny"


@pytest.fixture(scope="module")
def base_registry(tmp_path_factory, tiny_bert_dir) -> Path:
    path = tmp_path_factory.mktemp("target") / "registry.db"
    zoo.add_learngene(str(tiny_bert_dir), name="other", keep=0.5, registry=path)
    return path


def forge(folder: Path, meta_edit=None) -> None:
    """Make the artifact consistent again after an edit: gene sizes and hashes, content sha256, manifest."""
    meta = json.loads((folder / METADATA).read_text())
    if meta_edit:
        meta_edit(meta)
    for gene in meta["genes"]:
        path = folder / gene["file"]
        if path.is_file():
            data = path.read_bytes()
            gene["nbytes"], gene["sha256"] = len(data), sha256(data)
    for asset in meta["assets"]:
        if (folder / asset["file"]).is_file():
            asset["sha256"] = sha256((folder / asset["file"]).read_bytes())
    meta["content_sha256"] = content_sha256(meta, meta["genes"], {a["filename"]: a["sha256"] for a in meta["assets"]},
                                            None)
    (folder / METADATA).write_text(json.dumps(meta))
    manifest = json.loads((folder / MANIFEST).read_text())
    files = {g["file"] for g in meta["genes"]} | {a["file"] for a in meta["assets"]} | {METADATA, "README.md"}
    manifest["files"] = {}
    for rel in sorted(files):
        path = folder / rel
        if path.is_file() and ".." not in rel and not rel.startswith("/"):
            data = path.read_bytes()
            manifest["files"][rel] = {"sha256": sha256(data), "size": len(data)}
        else:
            manifest["files"][rel] = {"sha256": "0" * 64, "size": 1}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def rehash_metadata(folder: Path) -> None:
    """Only the manifest's entry for learngene.json made to match (the gene table and content hash left as edited)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    data = (folder / METADATA).read_bytes()
    manifest["files"][METADATA] = {"sha256": sha256(data), "size": len(data)}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def first_gene(folder: Path) -> Path:
    return folder / json.loads((folder / METADATA).read_text())["genes"][0]["file"]


def st_bytes(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _flip(f):
    data = bytearray(first_gene(f).read_bytes())
    data[-1] ^= 1
    first_gene(f).write_bytes(bytes(data))


def _truncate(f):
    gene = first_gene(f)
    gene.write_bytes(gene.read_bytes()[:-4])


def _pickle(f):
    first_gene(f).write_bytes(pickle.dumps({"coeffs": Payload()}))
    forge(f)


def _shape_lie(f):
    forge(f, lambda m: m["genes"][0].update(shape=[s + 1 for s in m["genes"][0]["shape"]]))


def _extra_tensor(f):
    gene = first_gene(f)
    data = gene.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
    header["hidden"] = {"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]}
    gene.write_bytes(st_bytes(header, data[8 + n:] + b"\0\0\0\0"))
    forge(f)


def _gap(f):
    gene = first_gene(f)
    gene.write_bytes(gene.read_bytes() + b"junk")
    forge(f)


def _huge_header(f):
    gene = first_gene(f)
    gene.write_bytes(struct.pack("<Q", 2**62) + gene.read_bytes()[8:])
    forge(f)


def _int_dtype(f):
    gene = first_gene(f)
    data = gene.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header["coeffs"]["dtype"] = "I32"
    gene.write_bytes(st_bytes(header, data[8 + n:]))
    forge(f)


def _traversal(f):
    outside = f.parent / "outside.safetensors"
    shutil.copyfile(first_gene(f), outside)
    forge(f, lambda m: m["genes"][0].update(file="genes/../../outside.safetensors"))


def _absolute(f):
    forge(f, lambda m: m["genes"][0].update(file=str(first_gene(f).resolve())))


def _symlink_out(f):
    gene = first_gene(f)
    outside = f.parent / f"copy-{f.name}.safetensors"
    shutil.copyfile(gene, outside)  # same bytes, same hash: only where it lies is wrong
    gene.unlink()
    gene.symlink_to(outside)


def _shared_file(f):
    forge(f, lambda m: m["genes"][1].update(file=m["genes"][0]["file"]))


def _duplicate_gene(f):
    forge(f, lambda m: m["genes"][1].update(name=m["genes"][0]["name"]))


def _asset_case(f):
    def edit(m):
        src = f / m["assets"][0]["file"]
        shutil.copyfile(src, f / "assets" / "VOCAB.txt")
        m["assets"].append({**m["assets"][0], "filename": "VOCAB.txt", "file": "assets/VOCAB.txt"})
        m["assets"][0].update(filename="vocab.TXT")
    forge(f, edit)


def _asset_path(f):
    forge(f, lambda m: m["assets"][0].update(filename="../../etc/cron.d/x"))


def _content_lie(f):
    meta = json.loads((f / METADATA).read_text())
    meta["family"] = "gpt2"  # the content sha256 no longer matches
    (f / METADATA).write_text(json.dumps(meta))
    rehash_metadata(f)


def _bad_name(f):
    forge(f, lambda m: m.update(name="../evil"))


def _newline_name(f):
    forge(f, lambda m: m["assets"][0].update(filename=m["assets"][0]["filename"] + "\n"))


def _newer_format(f):
    manifest = json.loads((f / MANIFEST).read_text())
    manifest["format_version"] = 99
    (f / MANIFEST).write_text(json.dumps(manifest))


def _deep_json(f):
    (f / METADATA).write_text("[" * 100_000 + "]" * 100_000)
    rehash_metadata(f)


def _oversized(f):
    manifest = json.loads((f / MANIFEST).read_text())
    manifest["files"]["assets/vocab.txt"]["size"] = 2**40  # refused before a byte of it is read
    (f / MANIFEST).write_text(json.dumps(manifest))


def _oversized_gene(f):
    meta = json.loads((f / METADATA).read_text())
    meta["genes"][0]["nbytes"] = 2**31
    (f / METADATA).write_text(json.dumps(meta))
    rehash_metadata(f)


def _no_manifest(f):
    (f / MANIFEST).unlink()


CASES = {
    "flipped byte": (_flip, "does not match its sha256"),
    "truncated gene": (_truncate, "bytes, the manifest says"),
    "pickle in a gene file": (_pickle, "header, longer than the file allows"),
    "declared shape differs from the bytes": (_shape_lie, "its entry says"),
    "extra tensor": (_extra_tensor, "exactly coeffs, mean and std"),
    "bytes beyond the tensors": (_gap, "data bytes, its tensors cover"),
    "huge header length": (_huge_header, "header, longer than the file allows"),
    "integer coefficients": (_int_dtype, "is not a float tensor"),
    "path with ..": (_traversal, "only learngene.json"),
    "absolute path": (_absolute, "only learngene.json"),
    "symlink out of the artifact": (_symlink_out, "points outside the artifact"),
    "two genes, one file": (_shared_file, "shares the file"),
    "two genes, one name": (_duplicate_gene, "two genes are named"),
    "assets colliding by case": (_asset_case, "ignoring case"),
    "asset name with a path": (_asset_path, "is not allowed here"),
    "content sha256 lie": (_content_lie, "does not match its contents"),
    "bad learngene name": (_bad_name, "is not allowed here"),
    "asset name ending in a newline": (_newline_name, "is not allowed here"),
    "newer format": (_newer_format, "upgrade zoo"),
    "deeply nested JSON": (_deep_json, "not valid JSON"),
    "asset size over the bound": (_oversized, "more than the"),
    "gene size over the bound": (_oversized_gene, "is out of range"),
    "no manifest": (_no_manifest, "no manifest.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_artifact_is_refused_and_the_registry_is_byte_identical(case, good, base_registry, tmp_path):
    edit, message = CASES[case]
    folder = tmp_path / "a" / "tiny"
    shutil.copytree(good, folder, symlinks=True)
    edit(folder)
    registry = tmp_path / "registry.db"
    shutil.copyfile(base_registry, registry)
    before = registry.read_bytes()
    result = CliRunner().invoke(cli, ["learngene", "import", str(folder), "--registry", str(registry)])
    assert result.exit_code == 1, (case, result.output)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert registry.read_bytes() == before, case
    checked = CliRunner().invoke(cli, ["learngene", "import", "--check", str(folder)])
    assert checked.exit_code == 1 and message in checked.output, checked.output
    assert sorted(p.name for p in registry.parent.iterdir() if p.name.startswith("registry")) == ["registry.db"]
    assert not MARKER.exists()
    # the untouched artifact checks and still imports into the same registry
    ok = CliRunner().invoke(cli, ["learngene", "import", "--check", str(good)])
    assert ok.exit_code == 0 and "learngene 'tiny' (bert, " in ok.output and "OK, every file checked" in ok.output
    ok = CliRunner().invoke(cli, ["learngene", "import", str(good), "--registry", str(registry)])
    assert ok.exit_code == 0 and "imported learngene 'tiny'" in ok.output, ok.output


def test_import_of_something_that_is_not_an_artifact(tmp_path, tiny_bert_dir, base_registry):
    registry = tmp_path / "registry.db"
    shutil.copyfile(base_registry, registry)
    before = registry.read_bytes()
    for ref, message in ((tiny_bert_dir, "no manifest.json of a learngene exported"),
                         (tmp_path / "nope", "is neither a folder nor an exported learngene")):
        result = CliRunner().invoke(cli, ["learngene", "import", str(ref), "--registry", str(registry)])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
    assert registry.read_bytes() == before
    assert torch.get_num_threads() >= 1


def test_bad_exports_and_adds_of_an_artifact(good, base_registry, tmp_path):
    registry = tmp_path / "registry.db"
    shutil.copyfile(base_registry, registry)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    cases = [(["learngene", "export", "other", str(taken)], "is not an empty folder"),
             (["learngene", "export", "nope", str(tmp_path / "new")], "unknown learngene 'nope'"),
             (["learngene", "add", str(good), "--keep", "0.25"], "--keep cannot change it")]
    for args, message in cases:
        result = CliRunner().invoke(cli, [*args, "--registry", str(registry)])
        assert result.exit_code != 0 and result.output.count("\n") == 1 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.db", "taken"]  # no half-written export
    assert (taken / "mine.txt").read_text() == "keep me"
