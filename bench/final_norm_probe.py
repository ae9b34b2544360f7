"""Probe behind zoo.calibrate: train llama-l2s (bench/convergence.py's recipe) with the final RMSNorm gain set by hand.

Each variant is ``METHOD:GAIN``; METHOD is ``select`` (Weight Selection) or ``dct`` (zoo's DCT, keep 1), GAIN is
``=V`` (every entry set to V; ``=1`` is the family's init, what zoo.calibrate does), ``xF`` (the source's gain
times F; the gain is first transferred as it was before zoo.calibrate) or ``source`` (transferred as is).

    PYTHONHASHSEED=0 python bench/final_norm_probe.py 'select:source;select:=1;select:x0.25;dct:=1'

Prints the held-out loss curve of each variant (random init's is in docs/results.md: 6.93 after 80 steps).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence as C  # noqa: E402


def main(spec: str) -> None:
    torch.set_num_threads(1)
    task = C.llama_l2s(False)
    methods = {"select": C.SELECT, "dct": C.DCT}
    with tempfile.TemporaryDirectory() as tmp:
        genes = C.Learngenes(Path(tmp))
        for variant in spec.split(";"):
            name, gain = variant.split(":")
            method = C.replace(methods[name], keep_calibrated=gain != "=1" and not gain.startswith("="))
            model = C.build(task, method, genes)
            with torch.no_grad():
                norm = model.model.norm.weight
                if gain.startswith("="):
                    norm.fill_(float(gain[1:]))
                elif gain.startswith("x"):
                    norm.mul_(float(gain[1:]))
                elif gain != "source":
                    raise SystemExit(f"gain must be =V, xF or source, got {gain!r}")
            curve = C.train(task, model)
            print(variant, " ".join(f"{s}:{loss:.3f}" for s, loss in curve), flush=True)
        genes.registry.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "select:source;select:=1;select:x0.25;dct:=1")
