"""Does FRONT+'s spectral refinement help? Refine MiniLM for a few lambdas, then compare convergence.

1. Refinement: all-MiniLM-L6-v2 is fine-tuned with masked-LM loss + lambda x the spectral penalty
   (:mod:`zoo.refine`, DCT keep 0.5: zoo's default learngene) on the training split of pydoc_data.topics, the same
   number of steps, batches and masks for every lambda. Reported: the share of the standardized energy inside the
   kept block before and after (``mean`` over genes, which the penalty optimizes, and ``overall``, weighted by
   size), and the masked-LM loss of the last refinement steps.
2. Convergence: the bert-l2s family of bench/convergence.py (the same target, batches, optimizer and held-out set)
   trained from random init, the unrefined learngene, and each refined learngene. lambda = 0 is the control: it is
   fine-tuned on the same text without the penalty, so "refined vs lambda 0" isolates the penalty's effect from the
   effect of having seen the training text.

    python bench/refine.py --threads 1                          # writes docs/refine.md and docs/refine-*.png
    python bench/refine.py --lambdas 0,1 --steps 10 --out /tmp/r  # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convergence as C  # noqa: E402  (also sets the offline environment)
import torch  # noqa: E402

SPEC = {"transform": "dct", "keep": 0.5}


def refined_learngenes(task: C.Task, genes: C.Learngenes, lambdas: list[float], steps: int, batch: int,
                       seq: int) -> tuple[str, dict[float, dict[str, Any]]]:
    """Add the unrefined learngene and one refined learngene per lambda to the benchmark's registry."""
    import zoo
    from zoo.pipeline import extract, parse_keep
    from zoo.refine import LearngeneSpec
    from zoo.refine_train import refine_model

    base = genes.get(task, C.DCT)
    info = genes.registry.get(base)
    spec = LearngeneSpec.of(info)
    checkpoint = C.checkpoint(task.source)
    adapter = zoo.catalog().architecture(task.arch)
    transform = zoo.catalog().transform(info.transform)
    out: dict[float, dict[str, Any]] = {}
    for lam in lambdas:
        start = time.perf_counter()
        result = refine_model(checkpoint, adapter, spec, data="pydoc", steps=steps, lam=lam, batch=batch, seq=seq,
                              progress=False)
        records = extract(result.genome, transform, parse_keep(info.keep), info.transform_params)
        name = f"{base}-refined-{lam:g}"
        genes.registry.add(_child(info, name, base), records)
        tail = result.losses[-10:]
        out[lam] = {"name": name, "before": result.before, "after": result.after, "seconds": time.perf_counter() - start,
                    "task_loss": sum(t for t, _ in tail) / len(tail), "penalty": sum(p for _, p in tail) / len(tail)}
        print(f"  lambda {lam:g}: in-block mean {result.before['mean']:.3f} -> {result.after['mean']:.3f}, overall "
              f"{result.before['overall']:.3f} -> {result.after['overall']:.3f}; last-10 MLM loss "
              f"{out[lam]['task_loss']:.3f} ({out[lam]['seconds']:.0f} s)", flush=True)
    return base, out


def _child(info: Any, name: str, parent: str) -> Any:
    from dataclasses import replace

    return replace(info, name=name, parent=parent, genes=0, nbytes=0, gene_summary=[])


def build_from(task: C.Task, name: str, genes: C.Learngenes) -> torch.nn.Module:
    """The target initialized from a stored learngene, exactly as bench/convergence.py's ``build`` does."""
    import zoo
    from zoo.pipeline import materialize

    info = genes.registry.get(name)
    adapter, config = C.target_config(task, info)
    transform = zoo.catalog().transform(info.transform)
    strategy = zoo.catalog().resize_strategy(getattr(transform, "default_strategy", "spectral"))
    records = {k: v for k, v in genes.registry.genes(name).items() if not (task.absent and k.startswith(task.absent))}
    with torch.no_grad():
        genome = materialize(records, adapter.sizes(config), transform, strategy, info.transform_params, "restore")
    torch.manual_seed(C.SEED)
    return adapter.build(config, genome)


def converge(task: C.Task, genes: C.Learngenes, base: str, refined: dict[float, dict[str, Any]]) -> dict[str, Any]:
    print(f"\n== {task.name}: {task.describe}", flush=True)
    inits = {"random": None, "unrefined": base, **{f"refined lambda {lam:g}": r["name"] for lam, r in refined.items()}}
    methods: dict[str, Any] = {}
    for label, name in inits.items():
        start = time.perf_counter()
        model = C.build(task, C.RANDOM, genes) if name is None else build_from(task, name, genes)
        curve = C.train(task, model)
        methods[label] = {"curve": curve, "note": name or "the family's own random init",
                          "train_s": time.perf_counter() - start}
        print(f"  {label:>20}: " + " ".join(f"{s}:{l:.3f}" for s, l in curve) +
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    params = sum(p.numel() for p in C.build(task, C.RANDOM, genes).parameters())
    return C.score({"task": task.name, "describe": task.describe, "direction": task.direction,
                    "budget": vars(task.budget), "parameters": params, "methods": methods})


def mean_loss(curve: list) -> float:
    """Area under the held-out curve (trapezoids over steps) / steps: lower = faster convergence overall."""
    area = sum((s1 - s0) * (l0 + l1) / 2 for (s0, l0), (s1, l1) in zip(curve, curve[1:]))
    return area / (curve[-1][0] - curve[0][0])


def choose_lambda(refined: dict[float, dict[str, Any]], families: list[dict[str, Any]]) -> tuple[float, str]:
    """The lambda > 0 with the lowest mean held-out loss (averaged over families); 0 if none beats the lambda-0
    control, i.e. the penalty itself does not help."""
    def score(lam: float) -> float:
        return sum(mean_loss(f["methods"][f"refined lambda {lam:g}"]["curve"]) for f in families) / len(families)

    scores = {lam: score(lam) for lam in refined}
    best = min((lam for lam in refined if lam > 0), key=scores.get, default=0.0)
    control = scores.get(0.0)
    if control is not None and scores.get(best, float("inf")) >= control:
        return 0.0, (f"no lambda > 0 beat the lambda 0 control (mean held-out loss {control:.3f}); the penalty does "
                     f"not help here")
    return best, (f"lowest mean held-out loss over the run ({scores[best]:.3f}"
                  + (f" vs {control:.3f} for the lambda 0 control" if control is not None else "") + ")")


def plot(refined: dict[float, dict[str, Any]], families: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(families), figsize=(5 + 5 * len(families), 4.2), dpi=110)
    ax = axes[0]
    lams = sorted(refined)
    xs = range(len(lams))
    ax.plot(xs, [refined[lam]["before"]["mean"] for lam in lams], "o--", color="grey", label="before (source)")
    ax.plot(xs, [refined[lam]["after"]["mean"] for lam in lams], "o-", label="after refinement")
    ax.set_xticks(list(xs), [f"{lam:g}" for lam in lams])
    ax.set_xlabel("lambda")
    ax.set_ylabel("share of energy in the kept block (mean over genes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for ax, f in zip(axes[1:], families):
        for label, r in f["methods"].items():
            steps, losses = zip(*r["curve"])
            ax.plot(steps, losses, marker="o", markersize=2.5, linewidth=1.3, label=f"{label} ({r['saved_text']})",
                    linestyle="--" if label in ("random", "unrefined") else "-")
        low = min(loss for r in f["methods"].values() for _, loss in r["curve"])
        ax.set_ylim(low - 0.1 * abs(low), f["methods"]["random"]["curve"][1][1] + 0.5)
        ax.set_title(f"{f['task']}: held-out loss (steps saved vs random)", fontsize=9)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(args: argparse.Namespace, command: str, refined: dict[float, dict[str, Any]],
             families: list[dict[str, Any]], chosen: tuple[float, str], image: str, env: dict[str, Any]) -> str:
    lines = ["# FRONT+ refinement, measured", "",
             "Generated by `bench/refine.py` (edit the script, not this file).", "",
             f"Command: `{command}`", "", f"Environment: {', '.join(f'{k} {v}' for k, v in env.items())}", "",
             "## 1. Refinement: energy inside the kept block (DCT, keep 0.5)", "",
             f"all-MiniLM-L6-v2 fine-tuned {args.steps} AdamW steps (lr 1e-4, batch {args.batch}, {args.seq} tokens, "
             "fresh masked-LM head) on pydoc_data.topics' training split with masked-LM loss + lambda x penalty. "
             "`mean`: the average gene's share of standardized energy inside the block (1 - penalty); `overall`: "
             "all truncated genes pooled (big genes weigh more).", "",
             "| lambda | mean before | mean after | overall before | overall after | MLM loss (last 10 steps) | time |",
             "|---|---|---|---|---|---|---|"]
    for lam, r in sorted(refined.items()):
        lines.append(f"| {lam:g} | {r['before']['mean']:.3f} | {r['after']['mean']:.3f} | {r['before']['overall']:.3f} "
                     f"| {r['after']['overall']:.3f} | {r['task_loss']:.3f} | {r['seconds']:.0f} s |")
    lines += ["", "## 2. Convergence from the refined learngenes", ""]
    for f in families:
        b = f["budget"]
        base = mean_loss(f["methods"]["unrefined"]["curve"])
        lines += [f"### {f['task']}", "", f"{f['describe']}. {f['parameters'] / 1e6:.1f} M parameters; {b['steps']} "
                  f"AdamW steps (lr {b['lr']:g}, batch {b['batch']}), held-out loss every {b['eval_every']} steps. "
                  f"Steps saved: to reach random init's final loss ({f['target_loss']:.3f}). Mean loss: the area "
                  "under the held-out curve / steps (lower = faster overall).", "",
                  "| init | loss @0 | final loss | mean loss | vs unrefined | steps saved |", "|---|---|---|---|---|---|"]
        for label, r in f["methods"].items():
            m = mean_loss(r["curve"])
            lines.append(f"| {label} | {r['curve'][0][1]:.3f} | {r['curve'][-1][1]:.3f} | {m:.3f} | {m - base:+.3f} "
                         f"| {r['saved_text']} |")
        lines.append("")
    lines += [f"![refinement: energy in the block and convergence]({image})", "",
              f"**Default lambda chosen by the script: {chosen[0]:g}** ({chosen[1]}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lambdas", default="0,0.1,1,10", help="comma-separated lambdas to refine with")
    p.add_argument("--steps", type=int, default=60, help="refinement steps per lambda")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--families", default="bert-l2s", help="convergence families (bert-l2s, bert-s2l)")
    p.add_argument("--threads", type=int, help="torch threads [default: torch's]")
    p.add_argument("--out", help="folder for refine.md, the PNG and the JSON [default: docs/]")
    p.add_argument("--smoke", action="store_true", help="the families' tiny CI sizes (checks the pipeline)")
    args = p.parse_args(argv)
    command = shlex.join(["python", "bench/refine.py", *(sys.argv[1:] if argv is None else argv)])
    if args.threads:
        torch.set_num_threads(args.threads)
    lambdas = [float(x) for x in args.lambdas.split(",")]
    out = Path(args.out) if args.out else C.DOCS
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "torch threads": torch.get_num_threads()}
    tasks = [C.FAMILIES[name](args.smoke) for name in args.families.split(",")]
    with tempfile.TemporaryDirectory(prefix="zoo-refine-bench-") as tmp:
        genes = C.Learngenes(Path(tmp))
        print(f"== refining MiniLM ({args.steps} steps per lambda)", flush=True)
        base, refined = refined_learngenes(tasks[0], genes, lambdas, args.steps, args.batch, args.seq)
        families = [converge(task, genes, base, refined) for task in tasks]
        genes.registry.close()
    chosen = choose_lambda(refined, families)
    print(f"\ndefault lambda: {chosen[0]:g} ({chosen[1]})", flush=True)
    image = "refine-convergence.png"
    plot(refined, families, out / image)
    (out / "refine.json").write_text(json.dumps({"refined": {str(k): v for k, v in refined.items()},
                                                 "families": families, "chosen": chosen}, indent=1, default=str))
    (out / "refine.md").write_text(markdown(args, command, refined, families, chosen, image, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
