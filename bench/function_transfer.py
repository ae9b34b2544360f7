"""How much of the source's computation survives a width reduction? A training-free diagnostic for docs/ablations.md.

MiniLM (6 x 384) is narrowed to 6 x 256 (depth kept, so only the neuron axes change) by Weight Selection, by the
DCT (keep 1), by the DCT over a neuron-sorted copy of MiniLM, and by the ordered learngene (calibrated ranking).
Each method is a linear map ``M`` from the source's hidden coordinates to the target's (selection rows for
``select`` and ``ordered``, the crop ``C_256^T C_384[:256]`` for the DCT). If the narrow model computed what the
source computes, seen through ``M``, its hidden states after layer ``l`` would equal ``M h_l``. The table gives
their mean cosine similarity per token (1 = the same up to scale) on held-out prose.

    python bench/function_transfer.py [--threads N]
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


def hidden_states(model, ids: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(input_ids=ids, output_hidden_states=True).hidden_states)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(0, -2), b.flatten(0, -2), dim=-1).mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer, BertModel

    import zoo
    from zoo_plugins.strategies.baselines import select_indices
    from zoo_plugins.transforms.dct import dct_basis

    source = convergence._minilm()
    tok = AutoTokenizer.from_pretrained(source)
    _, held_text = _data.topic_texts()
    ids = _data.token_blocks(tok, held_text, 64, [tok.cls_token_id], [tok.sep_token_id])[:16]
    n, m = 384, args.hidden
    maps = {"select": torch.eye(n)[select_indices(n, m)], "dct": dct_basis(m).T @ dct_basis(n, m)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sorted_dir = Path(tmp) / "sorted"
        convergence.sorted_source(str(source), sorted_dir)
        registry, added = Path(tmp) / "r.db", set()
        zoo.add_learngene(str(source), transform="ordered", name="ordered", registry=registry)
        added.add("ordered")
        from zoo.importance import Calibration, top_units

        ranked = top_units(Calibration.from_bytes(zoo.show_learngene("ordered", registry=registry).calibration)
                           .scores["hidden"], m)
        maps["ordered"] = torch.eye(n)[ranked]
        for label, src, strategy, stats in [("ordered (zoo's default)", source, "ordered", "restore"),
                                            ("select", source, "select", "restore"),
                                            ("dct, keep 1", source, "spectral", "restore"),
                                            ("dct, keep 1, stats none", source, "spectral", "none"),
                                            ("dct, keep 1, neurons sorted", sorted_dir, "spectral", "restore")]:
            name = "sorted" if src == sorted_dir else ("ordered" if strategy == "ordered" else "plain")
            if name not in added:
                zoo.add_learngene(str(src), transform="dct", keep=1.0, name=name, registry=registry)
                added.add(name)
            reference = hidden_states(BertModel.from_pretrained(src).eval(), ids)
            narrow = zoo.materialize("bert", learngene=name, hidden=m, registry=registry, strategy=strategy,
                                     stats=stats, device="cpu")
            got = hidden_states(narrow, ids)
            mapping = maps[strategy if strategy in ("select", "ordered") else "dct"]
            rows.append((label, [cosine(g, r @ mapping.T) for g, r in zip(got, reference)]))
    print(f"| method (6 x 384 -> 6 x {m}) | " + " | ".join(["embeddings"] + [f"layer {i}" for i in range(1, 7)]) + " |")
    print("|---|" + "---|" * 7)
    for label, values in rows:
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
