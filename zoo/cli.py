"""The ``zoo`` command line. Every command is a thin layer over :mod:`zoo.api`.

Errors zoo expects (bad names, sizes, paths, registries) print one line and exit 1; ``zoo -v`` shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

import click

from . import api
from .errors import ZooError
from .plugins import catalog, load_errors, load_plugins, plugin_sources, pm
from .refine_train import DEFAULT_LAMBDA, DEFAULT_REFINE_KEEP, refine_learngene

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class ZooGroup(click.Group):
    """Turns zoo's errors, and click's usage errors, into one clear line and a non-zero exit."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ZooError as exc:
            if _verbose(ctx):
                traceback.print_exc()
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `zoo learngene list | head`
            sys.stderr.close()
            raise click.exceptions.Exit(0) from None
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as exc:  # unexpected: still one line unless -v
            if _verbose(ctx):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc} (run `zoo -v ...` for the traceback)") from None


def _verbose(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.params or {}).get("verbose")) or os.environ.get("ZOO_DEBUG") == "1"


registry_option = click.option(
    "--registry", "registry", envvar="ZOO_REGISTRY", metavar="PATH|URL",
    help="Registry file or SQLAlchemy URL [env ZOO_REGISTRY; default: registry.db in the user data dir].",
)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=ZooGroup, context_settings=CONTEXT)
@click.version_option(package_name="zoo-learngenes", prog_name="zoo")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
def cli(verbose: bool) -> None:
    """zoo: learngenes from pretrained models, materialized into models of any size.

    \b
    Examples:
      zoo learngene add ./all-MiniLM-L6-v2 --keep 0.5
      zoo learngene list
      zoo materialize --arch bert --layers 4 --hidden 256 --out bert-4x256
      zoo materialize --arch gpt --layers 6 --out gpt-6
    """


@cli.group(cls=ZooGroup, context_settings=CONTEXT)
def learngene() -> None:
    """Add, list, show and remove learngenes."""


@learngene.command("add")
@click.argument("source")
@click.option("--transform", default="dct", show_default=True, help="Transform plugin (see `zoo plugins`).")
@click.option("--keep", default=str(api.DEFAULT_KEEP), show_default=True,
              help="Share of low frequencies kept per axis: 1 (everything; trains best), 0.5, or per role: "
                   "'hidden=0.5,depth=1'.")
@click.option("--name", help="Registry name [default: from the source, e.g. gpt2.dct].")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Storage precision of the coefficients.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A transform parameter, e.g. --param wavelet=db2 (repeatable; values parsed as JSON if they can be).")
@click.option("--wavelet", help="dwt: wavelet [haar]; same as --param wavelet=NAME.")
@click.option("--level", type=click.IntRange(min=0), help="dwt: decomposition level; overrides --keep (0 keeps all).")
@click.option("--mode", help="dwt: boundary mode [periodization]; same as --param mode=NAME.")
@click.option("--device", default="auto", show_default=True, help="Where the transforms run: auto, cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (bars only ever show on a terminal).")
@registry_option
def learngene_add(source: str, transform: str, keep: str, name: str | None, dtype: str, params: tuple[str, ...],
                  wavelet: str | None, level: int | None, mode: str | None, device: str, quiet: bool,
                  registry: str | None) -> None:
    """Extract a learngene from SOURCE and store it.

    SOURCE is a local Hugging Face folder or .safetensors file, a hub id (gpt2, google-bert/bert-base-uncased) or
    a short alias (bert-base).
    """
    sugar = {k: v for k, v in dict(wavelet=wavelet, level=level, mode=mode).items() if v is not None}
    info = api.add_learngene(source, transform=transform, keep=keep, name=name, dtype=dtype, registry=registry,
                             params={**parse_params(params), **sugar}, progress=not quiet, device=device)
    click.echo(f"added learngene '{info.name}' ({info.family}, {info.transform}, keep {_keep(info.keep)}, "
               f"{info.genes} genes, {info.nbytes / 2**20:.1f} MiB) from {info.source}")


def parse_params(items: tuple[str, ...], option: str = "--param") -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def _keep(keep: dict[str, float]) -> str:
    default = keep.get("*", 1.0)
    rest = ",".join(f"{k}={v:g}" for k, v in sorted(keep.items()) if k != "*")
    return f"{default:g}" + (f" ({rest})" if rest else "")


def _sizes(info: Any) -> str:
    try:
        sizes = catalog().architecture(info.family).sizes(info.source_config)
    except ZooError:
        return "?"
    return f"{sizes.get('depth', '?')}x{sizes.get('hidden', '?')}"


@learngene.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--family", help="Only this architecture family.")
@registry_option
def learngene_list(as_json: bool, family: str | None, registry: str | None) -> None:
    """List learngenes in the registry."""
    infos = api.list_learngenes(registry=registry, family=family)
    if as_json:
        _emit_json([i.to_json() for i in infos])
        return
    if not infos:
        click.echo("no learngenes yet; add one with `zoo learngene add SOURCE`")
        return
    rows = [(i.name, i.family, _sizes(i), i.transform, _keep(i.keep), f"{i.nbytes / 2**20:.1f}M",
             i.created_at.strftime("%Y-%m-%d %H:%M"), i.source) for i in infos]
    header = ("NAME", "FAMILY", "LAYERSxHIDDEN", "TRANSFORM", "KEEP", "SIZE", "CREATED", "SOURCE")
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


@learngene.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_option
def learngene_show(name: str, as_json: bool, registry: str | None) -> None:
    """Show one learngene: its source, transform and genes."""
    info = api.show_learngene(name, registry=registry)
    if as_json:
        _emit_json(info.to_json())
        return
    click.echo(f"name:       {info.name}")
    click.echo(f"family:     {info.family} ({_sizes(info)})")
    click.echo(f"source:     {info.source}")
    click.echo(f"sha256:     {info.source_sha256}")
    click.echo(f"transform:  {info.transform} {json.dumps(info.transform_params) if info.transform_params else ''}")
    click.echo(f"keep:       {_keep(info.keep)}")
    click.echo(f"stored:     {info.genes} genes, {info.nbytes / 2**20:.2f} MiB ({info.dtype})")
    click.echo(f"created:    {info.created_at.isoformat(timespec='seconds')} (zoo {info.zoo_version})")
    if info.parent:
        click.echo(f"parent:     {info.parent}")
        click.echo(f"lineage:    {' <- '.join(_lineage(info, registry))}")
    if info.refinement:
        r = info.refinement
        energy = r.get("energy_in_block", {})
        click.echo(f"refined:    FRONT+ lambda {r.get('lambda')}, {r.get('steps')} steps of {r.get('task')} on "
                   f"{r.get('data')} (lr {r.get('lr')}, batch {r.get('batch')}, seq {r.get('seq')})")
        if energy:
            click.echo(f"in block:   {energy['before']['mean']:.3f} -> {energy['after']['mean']:.3f} (mean share of "
                       f"energy in the kept block; overall {energy['before']['overall']:.3f} -> "
                       f"{energy['after']['overall']:.3f})")
    click.echo("genes:")
    for gene in info.gene_summary:
        axes = " x ".join(f"{r}={n}" for r, n in zip(gene["axes"], gene["source_shape"]))
        click.echo(f"  {gene['name']:<22} {axes}  -> kept {tuple(gene['shape'])}")


def _lineage(info: Any, registry: str | None) -> list[str]:
    """``[name, parent, grandparent, ...]``; stops at a missing parent or a cycle."""
    chain, current = [info.name], info
    while current.parent and current.parent not in chain:
        chain.append(current.parent)
        try:
            current = api.show_learngene(current.parent, registry=registry)
        except ZooError:
            break
    return chain


@learngene.command("rm")
@click.argument("name")
@registry_option
def learngene_rm(name: str, registry: str | None) -> None:
    """Remove a learngene."""
    api.remove_learngene(name, registry=registry)
    click.echo(f"removed learngene '{name}'")


@cli.command("materialize")
@click.option("--arch", help="Architecture family (bert, gpt2/gpt, ...); not needed with --from.")
@click.option("--from", "learngene_name", metavar="NAME", help="Learngene to use [default: the newest of --arch].")
@click.option("--layers", type=int, help="Number of layers.")
@click.option("--hidden", type=int, help="Hidden (model) width.")
@click.option("--heads", type=int, help="Attention heads [default: keep the head size].")
@click.option("--kv-heads", type=int, help="Key/value heads (GQA families).")
@click.option("--head-dim", type=int, help="Head size (families that set it apart from the width).")
@click.option("--ffn", type=int, help="Feed-forward width.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--strategy", help="Resize strategy [default: the transform's].")
@click.option("--stats", default="restore", show_default=True, type=click.Choice(["restore", "fan_in", "none"]),
              help="restore: each layer gets the source's mean and std (interpolated over depth); fan_in: "
                   "the same, std scaled by sqrt(source/target fan-in); none: no re-standardization.")
@click.option("--set", "options", multiple=True, metavar="KEY=VALUE",
              help="An architecture's other target option, e.g. --set format=timm --set img_size=224 for vit "
                   "(repeatable; values parsed as JSON if they can be).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (from_pretrained loads it).")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Type of the saved weights.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (bars only ever show on a terminal).")
@registry_option
def materialize_cmd(arch: str | None, learngene_name: str | None, layers: int | None, hidden: int | None,
                    heads: int | None, kv_heads: int | None, head_dim: int | None, ffn: int | None, device: str,
                    strategy: str | None, stats: str, options: tuple[str, ...], out: str, dtype: str, quiet: bool,
                    registry: str | None) -> None:
    """Build a model of any size from a learngene and save it as a Hugging Face folder.

    Sizes you leave out keep the source model's.
    """
    report = api.materialize_to_disk(
        out, arch, learngene=learngene_name, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, ffn=ffn, device=device, strategy=strategy, stats=stats, registry=registry,
        options=parse_params(options, "--set"), dtype=dtype, progress=not quiet,
    )
    sizes = report["sizes"]
    click.echo(f"using learngene '{report['learngene']}' ({report['family']}, from {report['source']}); "
               f"choose another with --from NAME (see `zoo learngene list`)")
    shape = ", ".join(f"{k} {v}" for k, v in sizes.items() if k in ("depth", "hidden", "heads", "kv_heads", "ffn"))
    click.echo(f"materialized {report['model_class']} ({shape}; {report['parameters'] / 1e6:.1f}M parameters, "
               f"{dtype}) -> {out}")
    if report["fresh_parameters"]:
        click.echo(f"note: {len(report['fresh_parameters'])} parameters had no gene and keep random init: "
                   f"{', '.join(report['fresh_parameters'][:4])}{' ...' if len(report['fresh_parameters']) > 4 else ''}")
    if report.get("reset_genes"):
        click.echo(f"note: tuned to the source's last layer, so left at init in this shallower model: "
                   f"{', '.join(report['reset_genes'])}")
    default_load = f"transformers.{report['model_class']}.from_pretrained({out!r})"
    click.echo(f"load it with: {report.get('load') or default_load}")


@cli.command("refine")
@click.argument("source")
@click.option("--data", required=True, help="Training data: a text file or folder (LM families), 'pydoc' (built-in "
              "English prose), or for ViTs a folder with one subfolder of images per class.")
@click.option("--steps", required=True, type=int, help="Training steps.")
@click.option("--lambda", "lam", type=float, default=None, help=f"Penalty weight [default: {DEFAULT_LAMBDA:g}, chosen from "
              "bench/refine.py: docs/refine.md].")
@click.option("--transform", default="dct", show_default=True, help="Transform of the learngene to refine for.")
@click.option("--keep", default=str(DEFAULT_REFINE_KEEP), show_default=True,
              help="Keep ratios of that learngene (below 1: refinement moves energy into the kept block).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A transform parameter (repeatable).")
@click.option("--parent", help="The unrefined learngene of SOURCE to link to (its transform and keep are used) "
              "[default: the newest matching one, else it is added too].")
@click.option("--name", help="Name of the refined learngene [default: PARENT.refined].")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="AdamW learning rate.")
@click.option("--batch", type=int, default=8, show_default=True, help="Sequences (or images) per step.")
@click.option("--seq", type=int, default=64, show_default=True, help="Tokens per sequence (LM families).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Storage precision of the coefficients.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@registry_option
def refine_cmd(source: str, data: str, steps: int, lam: float | None, transform: str, keep: str,
               params: tuple[str, ...], parent: str | None, name: str | None, lr: float, batch: int, seq: int,
               seed: int, dtype: str, device: str, registry: str | None) -> None:
    """FRONT+: fine-tune SOURCE briefly with its task loss + lambda x the energy outside the learngene's block,
    then add the refined learngene, linked to the unrefined one (`zoo learngene show` prints the lineage).

    Tasks: masked LM (BERT), causal LM (GPT-2, Llama), classification (ViT). Ctrl-C during training leaves the
    registry unchanged.
    """
    try:
        refined, parent_info = refine_learngene(
            source, data=data, steps=steps, lam=DEFAULT_LAMBDA if lam is None else lam, transform=transform,
            keep=keep, params=parse_params(params), name=name, parent=parent, dtype=dtype, lr=lr, batch=batch,
            seq=seq, seed=seed, device=device, registry=registry)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: nothing was added; the registry is unchanged", err=True)
        raise click.exceptions.Exit(130) from None
    energy = refined.refinement["energy_in_block"]
    click.echo(f"added learngene '{refined.name}' (refined from '{parent_info.name}', lambda "
               f"{refined.refinement['lambda']:g}, {steps} steps): energy in the kept block "
               f"{energy['before']['mean']:.3f} -> {energy['after']['mean']:.3f} (mean over genes)")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_cmd(as_json: bool) -> None:
    """List loaded plugins: where each comes from, its hooks, what it registers, and plugins that failed to load.

    SOURCE is the distribution ("name version"), "builtin" (one of zoo's own) or "runtime"
    (zoo.register_plugin). ZOO_LOAD_PLUGINS / ZOO_DISABLE_PLUGINS (comma-separated names) control loading.
    """
    cat = catalog()
    kinds = ("architectures", "transforms", "resize_strategies")
    rows: dict[str, dict[str, Any]] = {}
    # every loaded plugin, including those that only resolve sources or add commands
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        rows[name] = {"name": name, "source": plugin_sources.get(name, "?"),
                      "module": getattr(plugin, "__name__", type(plugin).__name__),
                      "hooks": sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()),
                      **{kind: [] for kind in kinds}}
    for kind in kinds:
        for name, entry in getattr(cat, kind).items():
            rows[entry.plugin][kind].append(name)
    data = sorted(rows.values(), key=lambda r: r["name"])
    if as_json:
        _emit_json({"plugins": data, "errors": load_errors})
        return
    for row in data:
        provided = [f"{k.replace('_', ' ')}: {', '.join(row[k])}" for k in kinds if row[k]]
        other_hooks = [h for h in row["hooks"] if h.removeprefix("register_") not in kinds]
        if other_hooks:
            provided.append(f"hooks: {', '.join(other_hooks)}")
        click.echo(f"{row['name']:<12} {row['source']:<24} {'; '.join(provided)}")
    for name, error in load_errors.items():
        click.echo(f"{name:<12} FAILED TO LOAD: {error}")


@cli.group(cls=ZooGroup, context_settings=CONTEXT)
def db() -> None:
    """Registry maintenance."""


@db.command("upgrade")
@registry_option
def db_upgrade(registry: str | None) -> None:
    """Upgrade a registry to this zoo's schema (back it up first)."""
    from .registry.store import Registry, default_registry_path, to_url

    location = registry or str(default_registry_path())
    with Registry(to_url(location), create=False, check_schema=False) as reg:
        reg.upgrade()
    click.echo(f"registry {location} is at the current schema")


@cli.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@registry_option
def verify_cmd(names: tuple[str, ...], as_json: bool, registry: str | None) -> None:
    """Check the registry: database integrity, every gene's and asset's sha256, safetensors, shapes.

    Exits 1 if anything is damaged. Nothing is repaired: restore from a backup, or re-add the learngene.
    """
    from .registry.store import Registry, default_registry_path, to_url
    from .registry.verify import verify

    location = to_url(registry or default_registry_path())
    with Registry(location, create=False, check_schema=False, read_only=True) as reg:
        report = verify(reg, names)
    if as_json:
        _emit_json(report.to_json())
    else:
        for problem in report.problems:
            click.echo(f"DAMAGED: {problem}")
        status = "OK" if report.ok else f"{len(report.problems)} problem(s) found; nothing was changed"
        click.echo(f"registry {report.registry}: {report.learngenes} learngenes, {report.genes} genes, "
                   f"{report.assets} assets checked ({report.nbytes / 2**20:.1f} MiB): {status}")
        if report.staged:
            from .registry.staging import STALE_AFTER_S

            click.echo(f"also {report.staged} learngene(s) being added, or left unfinished by an add that was killed "
                       f"(hidden; the next add removes those untouched for {STALE_AFTER_S // 3600} hours)")
    if not report.ok:
        raise click.exceptions.Exit(1)


def _register_plugin_commands() -> None:
    try:
        load_plugins()
        pm.hook.register_commands(cli=cli)
    except Exception as exc:  # a broken plugin must not take the CLI down
        click.echo(f"warning: plugin commands failed to load: {exc}", err=True)


_register_plugin_commands()


def main() -> None:
    cli(prog_name="zoo")


if __name__ == "__main__":
    sys.exit(main())
