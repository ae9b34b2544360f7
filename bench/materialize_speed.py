"""How fast is `zoo materialize` compared with building the same model from scratch?

Creates (in a temporary folder) a random GPT-2-small-shaped checkpoint (``GPT2Config()`` defaults: 12 layers,
768 wide, 12 heads, vocab 50257, 1024 positions), adds its learngene to a temporary registry, then times, for each
target size:

* ``cli``: ``zoo materialize --arch gpt2 --out DIR`` end to end, as a subprocess of the installed ``zoo`` (the one
  next to this interpreter), against a baseline subprocess that builds the same ``GPT2LMHeadModel`` with random init
  and ``save_pretrained`` s it. Both include interpreter start-up and imports.
* ``api``: the same two things in this process (``zoo.materialize(..., out=DIR)`` against
  ``GPT2LMHeadModel(config).save_pretrained(DIR)``), after one untimed warm-up each, so start-up is excluded.

Each is repeated ``--repeats`` times (interleaved, so background noise hits both sides alike); the table shows
medians and the ratio materialize / baseline (lower is better; <= 1.0 means materializing is no slower than a
random init). The baseline model's config is the materialized model's own ``config.json``, so both build exactly
the same shapes.

    python bench/materialize_speed.py                      # source size and 6 x 384, 3 repeats (< 3 min, 2 cores)
    python bench/materialize_speed.py --layers 4 --hidden 256 --repeats 5 --json out.json
    python bench/materialize_speed.py --smoke              # tiny config, 1 repeat: a CI check (timings meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

# The baseline subprocess: the same HF model with random init, then save_pretrained.
BASELINE_CODE = textwrap.dedent(
    """
    import sys
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config.from_json_file(sys.argv[1])).save_pretrained(sys.argv[2])
    """
).strip()

SMOKE_SOURCE = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 1000, "n_positions": 128,
                "bos_token_id": 999, "eos_token_id": 999}
SMOKE_TARGETS = [(1, 32)]  # one resized target: two subprocess start-ups in all
DEFAULT_TARGETS = [(None, None), (6, 384)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `zoo materialize` against random init + save_pretrained of the same GPT-2 model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[0],
    )
    parser.add_argument("--keep", type=float, default=0.5, help="learngene keep ratio (default: 0.5)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement (default: 3; 1 with --smoke)")
    parser.add_argument("--layers", type=int, help="target layers (default: the source's, and also 6)")
    parser.add_argument("--hidden", type=int, help="target width (default: the source's, and also 384)")
    parser.add_argument("--smoke", action="store_true", help="tiny config and 1 repeat: finishes in seconds (CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process API timings")
    parser.add_argument("--skip-api", action="store_true", help="only the subprocess (CLI) timings")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (printed at the end)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if not 0.0 < args.keep <= 1.0:
        parser.error("--keep must be in (0, 1]")
    if args.skip_cli and args.skip_api:
        parser.error("--skip-cli and --skip-api leave nothing to time")
    return args


def zoo_executable() -> Path:
    exe = Path(sys.executable).parent / ("zoo.exe" if os.name == "nt" else "zoo")
    if not exe.exists():
        sys.exit(f"error: no `zoo` next to {sys.executable}; install the project first (pip install -e .)")
    return exe


def run(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time of one subprocess; fail loudly (with its output) if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}")
        sys.exit(1)
    return elapsed


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh_dir(root: Path, name: str) -> Path:
    path = root / name
    if path.exists():
        shutil.rmtree(path)
    return path


def describe(config: dict[str, Any]) -> str:
    ffn = config.get("n_inner") or 4 * config["n_embd"]
    return f"{config['n_layer']} x {config['n_embd']} (heads {config['n_head']}, ffn {ffn})"


def summary(materialize: list[float], baseline: list[float]) -> dict[str, Any]:
    m, b = statistics.median(materialize), statistics.median(baseline)
    return {"materialize_s": materialize, "baseline_s": baseline, "materialize_median_s": m,
            "baseline_median_s": b, "ratio": m / b}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "cd " + shlex.quote(os.getcwd()) + " && " + shlex.join([sys.executable, *sys.argv])

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    import zoo

    zoo_exe = None if args.skip_cli else zoo_executable()
    tmp = Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    try:
        # -- the source checkpoint and its learngene --------------------------------------------------------------
        torch.manual_seed(0)
        source_config = GPT2Config(**SMOKE_SOURCE) if args.smoke else GPT2Config()
        source_dir = tmp / "source"
        start = time.perf_counter()
        GPT2LMHeadModel(source_config).save_pretrained(source_dir)
        setup_source = time.perf_counter() - start
        registry = tmp / "registry.db"
        start = time.perf_counter()
        info = zoo.add_learngene(str(source_dir), keep=args.keep, name="bench-gpt2", registry=str(registry))
        setup_add = time.perf_counter() - start
        print(f"source: random GPT-2 {describe(source_config.to_dict())}, saved in {setup_source:.1f} s; "
              f"learngene '{info.name}' (keep {args.keep:g}) added in {setup_add:.1f} s", flush=True)

        if args.layers is not None or args.hidden is not None:
            targets = [(args.layers, args.hidden)]
        else:
            targets = SMOKE_TARGETS if args.smoke else DEFAULT_TARGETS

        env = {**os.environ, **QUIET_ENV, "ZOO_REGISTRY": str(registry)}
        results = []
        for layers, hidden in targets:
            sizes = {"layers": layers, "hidden": hidden}
            size_flags = [f for k, v in sizes.items() if v is not None for f in (f"--{k}", str(v))]

            def api_materialize(out: Path, sizes: dict[str, int | None] = sizes) -> torch.nn.Module:
                return zoo.materialize("gpt2", **sizes, registry=str(registry), device="cpu", out=out)

            # untimed warm-up; its config.json is the baseline's config, so both sides build the same shapes
            warm = fresh_dir(tmp, "warm")
            model = api_materialize(warm)
            config_json = tmp / "target-config.json"
            shutil.copy(warm / "config.json", config_json)
            target_config = GPT2Config.from_json_file(config_json)
            n_params = sum(p.numel() for p in model.parameters())
            baseline_params = sum(p.numel() for p in GPT2LMHeadModel(target_config).parameters())  # also a warm-up
            if n_params != baseline_params:
                sys.exit(f"error: materialized model has {n_params} parameters, baseline {baseline_params}")
            del model
            shutil.rmtree(warm)
            label = describe(target_config.to_dict()) + (" [source size]" if layers is None and hidden is None else "")
            print(f"target {label}: {n_params / 1e6:.1f}M parameters", flush=True)

            cli_cmd = [str(zoo_exe), "materialize", "--arch", "gpt2", *size_flags, "--device", "cpu",
                       "--registry", str(registry), "--out"] if zoo_exe else []
            base_cmd = [sys.executable, "-c", BASELINE_CODE, str(config_json)]
            times: dict[str, list[float]] = {"cli_mat": [], "cli_base": [], "api_mat": [], "api_base": []}
            for i in range(args.repeats):
                if not args.skip_cli:
                    out = fresh_dir(tmp, "out-cli")
                    times["cli_mat"].append(run([*cli_cmd, str(out)], env))
                    out = fresh_dir(tmp, "out-base")
                    times["cli_base"].append(run([*base_cmd, str(out)], env))
                if not args.skip_api:
                    out = fresh_dir(tmp, "out-api")
                    times["api_mat"].append(timed(lambda out=out: api_materialize(out)))
                    out = fresh_dir(tmp, "out-api-base")
                    times["api_base"].append(
                        timed(lambda out=out, cfg=target_config: GPT2LMHeadModel(cfg).save_pretrained(out))
                    )
                done = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v)
                print(f"  run {i + 1}/{args.repeats}: {done}", flush=True)
            for name in ("out-cli", "out-base", "out-api", "out-api-base"):
                shutil.rmtree(tmp / name, ignore_errors=True)
            entry: dict[str, Any] = {
                "target": {"layers": target_config.n_layer, "hidden": target_config.n_embd,
                           "heads": target_config.n_head, "ffn": target_config.n_inner or 4 * target_config.n_embd,
                           "vocab": target_config.vocab_size, "positions": target_config.n_positions},
                "requested": sizes,
                "label": label,
                "parameters": n_params,
            }
            if not args.skip_cli:
                entry["cli"] = summary(times["cli_mat"], times["cli_base"])
                entry["cli"]["materialize_command"] = shlex.join([*cli_cmd, "DIR"])
            if not args.skip_api:
                entry["api"] = summary(times["api_mat"], times["api_base"])
            results.append(entry)

        # -- report ------------------------------------------------------------------------------------------------
        rows = [("target", "mode", "materialize", "baseline", "ratio")]
        for entry in results:
            for mode, what in (("cli", "subprocess, end to end"), ("api", "in-process")):
                if mode in entry:
                    r = entry[mode]
                    rows.append((entry["label"] if len(rows) == 1 or rows[-1][0] != entry["label"] else "",
                                 f"{mode} ({what})", f"{r['materialize_median_s']:.2f} s",
                                 f"{r['baseline_median_s']:.2f} s", f"{r['ratio']:.2f}x"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print()
        print(f"median of {args.repeats} run(s); ratio = materialize / baseline (random init + save_pretrained)")
        for n, row in enumerate(rows):
            print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
            if n == 0:
                print("  ".join("-" * w for w in widths))
        env_info = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "zoo": getattr(zoo, "__version__", "?"),
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        }
        print(f"\n{', '.join(f'{k} {v}' for k, v in env_info.items())}")
        if args.smoke:
            print("smoke mode: a tiny model, so these timings are start-up and overheads, not a benchmark")
        print(f"reproduce: {command}")
        if args.json:
            payload = {
                "command": command,
                "environment": env_info,
                "keep": args.keep,
                "repeats": args.repeats,
                "smoke": args.smoke,
                "source": {"config": describe(source_config.to_dict()), "save_s": setup_source,
                           "add_learngene_s": setup_add},
                "results": results,
            }
            Path(args.json).expanduser().parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).expanduser().write_text(json.dumps(payload, indent=2) + "\n")
            print(f"wrote {args.json}")
    finally:
        if args.keep_tmp:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
