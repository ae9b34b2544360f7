"""Do a ViT init's features carry the task before any fine-tuning? A training-free diagnostic for docs/ablations.md.

Each init of a ViT family (the benchmark's own ``build``) is frozen; its pooled features (the class token and the
mean patch token after the final norm, what the classifier reads) are standardized on the training images, and a
linear classifier is fitted to them to convergence (L-BFGS, full batch, a little weight decay). The table gives
its held-out loss and accuracy: how good the features are when the head is not the bottleneck, against what the
same init reaches after the family's fine-tuning (docs/results.md).

    python bench/linear_probe.py [--families vit-l2s,vit-photo-l2s] [--sizes layers=12,hidden=384] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence  # noqa: E402


def pooled(model, images: torch.Tensor) -> torch.Tensor:
    """What a Dinov2ForImageClassification head reads: [class token, mean patch token] after the final norm."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            h = model.base_model(pixel_values=images[i:i + 64]).last_hidden_state
            out.append(torch.cat([h[:, 0], h[:, 1:].mean(1)], -1))
    return torch.cat(out)


def probe(train: torch.Tensor, y: torch.Tensor, held: torch.Tensor, hy: torch.Tensor) -> tuple[float, float]:
    """(held-out loss, held-out accuracy) of a linear classifier fitted on standardized frozen features."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, held = (train - mean) / std, (held - mean) / std
    torch.manual_seed(0)
    head = torch.nn.Linear(train.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(train), y) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = head(held)
        return torch.nn.functional.cross_entropy(logits, hy).item(), (logits.argmax(1) == hy).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="vit-l2s,vit-photo-l2s")
    parser.add_argument("--sizes", type=convergence._sizes, help="override the target's sizes")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| family | target | init | held-out loss | held-out accuracy |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="zoo-probe-") as tmp:
        genes = convergence.Learngenes(Path(tmp))
        for family in args.families.split(","):
            task = convergence.FAMILIES[family](False)
            if args.sizes:
                task.sizes = {**task.sizes, **args.sizes}
            if not task.images:
                parser.error(f"{family} is not an image family")
            x, y, hx, hy = task.images
            for method in (convergence.RANDOM, convergence.ORDERED, *task.baselines()):
                model = convergence.build(task, method, genes).eval()
                loss, acc = probe(pooled(model, x), y, pooled(model, hx), hy)
                print(f"| {family} | {task.sizes['layers']} x {task.sizes['hidden']} | {method.name} | {loss:.3f} | "
                      f"{acc:.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
