"""Does a grown model compute what its source computed? A training-free diagnostic for docs/ablations.md.

DINOv2 ViT-S/14 (12 x 384) is grown by the ordered strategy with each growth rule, and its hidden states on
held-out digits are compared with the source's, mapped through the growth (copied channels read their original;
fresh channels are left out), as the mean cosine per image after each layer of the source. A copied layer is
compared with the source layer it copies.

    python bench/growth_function.py [--layers 14] [--hidden 512] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
import convergence  # noqa: E402

RULES = {  # label -> OrderedStrategy options
    "copies, layers copied as they are": {"grow": "copy", "stack": "copy"},
    "copies, copied layers' writers zeroed": {"grow": "copy", "stack": "zero"},
    "fresh units, layers copied as they are": {"grow": "fresh", "stack": "copy"},
    "fresh units, copied layers' writers zeroed (default)": {},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=14)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from zoo_plugins.strategies.baselines import duplicate_indices
    from zoo_plugins.transforms.ordered import OrderedStrategy

    def task(layers: int, hidden: int) -> convergence.Task:
        return convergence._vit_task("vit-growth", {"layers": layers, "hidden": hidden}, "small-to-large", False)

    images = _data.digits(56, convergence.SEED)[2][:64]

    def states(model) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(model.eval().dinov2(pixel_values=images, output_hidden_states=True).hidden_states)

    with tempfile.TemporaryDirectory() as tmp:
        genes = convergence.Learngenes(Path(tmp))
        source = states(convergence.build(task(12, 384), convergence.ORDERED, genes))
        layers = duplicate_indices(12, args.layers).tolist()  # the source layer each target layer copies
        rows = []
        for label, options in RULES.items():
            method = convergence.replace(convergence.ORDERED, strategy=OrderedStrategy(**options))
            grown = states(convergence.build(task(args.layers, args.hidden), method, genes))
            fresh = options.get("grow", "fresh") == "fresh"
            channels = torch.arange(384) if fresh else duplicate_indices(384, args.hidden)
            cosines = []
            for i, h in enumerate(grown):
                mine = h[..., :384] if fresh else h  # fresh channels are zero: compare the source's own
                ref = source[0 if i == 0 else layers[i - 1] + 1][..., channels]
                cosines.append(torch.nn.functional.cosine_similarity(mine.flatten(1), ref.flatten(1)).mean().item())
            rows.append((label, cosines))
    print(f"| growth (12 x 384 -> {args.layers} x {args.hidden}) | " +
          " | ".join(["embeddings"] + [f"layer {i}" for i in range(1, args.layers + 1)]) + " |")
    print("|---|" + "---|" * (args.layers + 1))
    for label, values in rows:
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
