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
from click.core import ParameterSource

from . import api
from .errors import UnknownNameError, ZooError
from .inputs import registry_session
from .plugin_host import catalog, load_errors, load_plugins, plugin_sources, pm
from .refine_train import DEFAULT_LAMBDA, DEFAULT_REFINE_KEEP, refine_learngene
from .request import DEFAULT_SEED, MaterializeRequest
from .share import artifact_folder, export_learngene, find_artifact, import_learngene

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class ZooGroup(click.Group):
    """Turns zoo's errors, and click's usage errors, into one clear line and a non-zero exit."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        self.typed_args = list(sys.argv[1:] if args is None else args)  # kept in zoo.json as the command typed
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
        except KeyboardInterrupt:  # Ctrl-C: the shell convention, 128 + SIGINT
            click.echo("\ninterrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:  # unexpected: still one line unless -v
            if _verbose(ctx):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {exc} (run `zoo -v ...` for the traceback)") from None


def _verbose(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.params or {}).get("verbose")) or os.environ.get("ZOO_DEBUG") == "1"


def _global_registry(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``zoo --registry X learngene list`` and ``zoo learngene list --registry X`` both work; the command's own
    option wins, then the global one, then $ZOO_REGISTRY."""

    given = ctx.find_root().params.get("registry")
    if given and ctx.get_parameter_source(param.name) in (ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT, None):
        return given
    return value


registry_option = click.option(
    "--registry", "registry", envvar="ZOO_REGISTRY", metavar="PATH|URL", callback=_global_registry,
    help="Registry file or SQLAlchemy URL [env ZOO_REGISTRY; default: registry.db in the user data dir].",
)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=ZooGroup, context_settings=CONTEXT)
@click.version_option(package_name="zoo-learngenes", prog_name="zoo")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors [env ZOO_DEBUG=1].")
@click.option("--registry", "registry", metavar="PATH|URL",
              help="Registry for every command (a command's own --registry wins) [env ZOO_REGISTRY].")
def cli(verbose: bool, registry: str | None) -> None:
    """zoo: learngenes from pretrained models, materialized into models of any size.

    \b
    Examples:
      zoo learngene list
      zoo materialize --arch bert --layers 4 --hidden 256      # -> ./bert-4x256/
      zoo materialize --arch vit --layers 6 --hidden 192 --heads 3 --out vit-tiny
      zoo materialize --like bert-4x256 --out bert-again       # the same bytes again
      zoo verify
      zoo learngene add ./my-model --keep 0.5                 # your own model folder
    """


@cli.group(cls=ZooGroup, context_settings=CONTEXT)
def learngene() -> None:
    """Add, list, show, remove, export and import learngenes."""


@learngene.command("add")
@click.argument("source")
@click.option("--transform", default=api.DEFAULT_TRANSFORM, show_default=True,
              help="Transform plugin (see `zoo plugins`): ordered (calibrated, the default), dct (FRONT), dwt (BoT).")
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
@click.option("--calibrate", "calibrate", default="default", show_default=True, metavar="default|none|PATH",
              help="ordered: data the source runs on once to rank its units: built-in prose or photographs, none "
                   "(weights only), or a folder of your .txt/.md files or images.")
@click.option("--calibrate-samples", type=int, default=api.DEFAULT_SAMPLES, show_default=True,
              help="ordered: calibration sequences (128 tokens each) or images.")
@click.option("--device", default="auto", show_default=True, help="Where the transforms run: auto, cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars or library logs (bars only ever show on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the added learngene as JSON.")
@registry_option
def learngene_add(source: str, transform: str, keep: str, name: str | None, dtype: str, params: tuple[str, ...],
                  wavelet: str | None, level: int | None, mode: str | None, calibrate: str, calibrate_samples: int,
                  device: str, quiet: bool, as_json: bool, registry: str | None) -> None:
    """Extract a learngene from SOURCE and store it.

    SOURCE is a local Hugging Face folder or .safetensors file, a hub id (gpt2, google-bert/bert-base-uncased) or
    a short alias (bert-base). A folder or hub repository written by `zoo learngene export` is imported as it is
    (`zoo learngene import`).
    """

    if artifact_folder(source) is not None:  # an exported learngene (folder or ORG/REPO): imported as it is
        ctx = click.get_current_context()
        given = [f"--{p}" for p in ("transform", "keep", "dtype", "param", "wavelet", "level", "mode", "calibrate")
                 if ctx.get_parameter_source(p if p != "param" else "params") == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{source} is an exported learngene, imported as it was made: {', '.join(given)} "
                                   f"cannot change it (use `zoo learngene import`)")
        _import(source, name, registry, link_parent=True)
        return
    sugar = {k: v for k, v in dict(wavelet=wavelet, level=level, mode=mode).items() if v is not None}
    _quiet_libraries(quiet)
    info = api.add_learngene(source, transform=transform, keep=keep, name=name, dtype=dtype, registry=registry,
                             params={**parse_params(params), **sugar}, progress=not quiet, device=device,
                             calibrate=calibrate, calibrate_samples=calibrate_samples, import_exported=False)
    if as_json:
        _emit_json(info.to_json())
        return
    click.echo(f"added learngene '{info.name}' ({info.family}, {info.transform}, keep {_stored(info)}, "
               f"{info.genes} genes, {info.nbytes / 2**20:.1f} MiB) from {info.source}")
    if info.calibration_meta:
        click.echo(f"calibrated on {_calibration(info.calibration_meta)}")


def _calibration(meta: dict[str, Any]) -> str:
    amount = f"{meta['tokens']} tokens" if "tokens" in meta else (f"{meta['images']} images" if "images" in meta
                                                                    else "")
    return f"{meta.get('data')}" + (f", {meta.get('samples')} samples ({amount})" if amount else "") + \
        f", {meta.get('seconds')} s" + (f" on {meta['device']}" if meta.get("device") else "")


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


def _stored(info: Any) -> str:
    """The share of coefficients a learngene stores per axis: its keep ratios, or what a wavelet ``level``, which
    overrides them, keeps (each level halves an axis)."""
    level = (info.transform_params or {}).get("level")
    if isinstance(level, int) and not isinstance(level, bool):
        return f"{0.5 ** level:g} (level {level})"
    return _keep(info.keep)


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
    rows = [(i.name, i.family, _sizes(i), i.transform, _stored(i), f"{i.nbytes / 2**20:.1f}M",
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
    click.echo(f"keep:       {_stored(info)}")
    if info.calibration_meta:
        click.echo(f"calibrated: {_calibration(info.calibration_meta)}")
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


@learngene.command("export")
@click.argument("name")
@click.argument("path", type=click.Path(file_okay=False))
@registry_option
def learngene_export(name: str, path: str, registry: str | None) -> None:
    """Write learngene NAME as a folder at PATH to share: safetensors genes, JSON metadata and lineage, assets, a
    model card and a sha256 manifest. The folder is a Hugging Face Hub repository as it is:
    `hf upload ORG/REPO PATH .`; others get it with `zoo learngene import ORG/REPO`."""

    done = export_learngene(name, path, registry=registry)
    click.echo(f"exported learngene '{done.name}' ({done.genes} genes, {done.nbytes / 2**20:.1f} MiB, content sha256 "
               f"{done.content_sha256[:12]}...) to {done.path}; share it with `hf upload ORG/REPO {done.path} .`")


@learngene.command("import")
@click.argument("source", metavar="PATH|ORG/REPO")
@click.option("--name", help="Store it under this name [default: its own].")
@click.option("--no-parent", is_flag=True, help="Import a refined learngene whose parent this registry lacks, "
              "without the lineage link.")
@click.option("--check", is_flag=True, help="Only check the artifact (before uploading it, say); store nothing.")
@registry_option
def learngene_import(source: str, name: str | None, no_parent: bool, check: bool, registry: str | None) -> None:
    """Import a learngene written by `zoo learngene export`: a folder, or a Hub repository (through the Hugging Face
    cache; HF_HUB_OFFLINE=1 uses only the cache). Every file is checked (size, sha256, safetensors header) before
    anything is stored; only JSON and safetensors are read. Importing one already there is a no-op."""
    if check:
        art = find_artifact(source)
        click.echo(f"{source}: learngene '{art.meta['name']}' ({art.meta['family']}, {len(art.genes)} genes, "
                   f"{sum(g['nbytes'] for g in art.genes) / 2**20:.1f} MiB, content sha256 "
                   f"{art.content_sha256[:12]}...): OK, every file checked")
        return
    _import(source, name, registry, link_parent=not no_parent)


def _import(source: str, name: str | None, registry: str | None, link_parent: bool) -> None:
    done = import_learngene(source, registry=registry, name=name, link_parent=link_parent)
    info = done.info
    if not done.imported:
        click.echo(f"learngene '{info.name}' is already in the registry with the same content (sha256 "
                   f"{done.content_sha256[:12]}...); nothing was imported")
        return
    parent = f", refined from '{info.parent}'" if info.parent else ""
    click.echo(f"imported learngene '{info.name}' ({info.family}, {info.transform}, {info.genes} genes, "
               f"{info.nbytes / 2**20:.1f} MiB{parent}) from {source}")


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
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (from_pretrained loads it); zoo's own earlier output there is replaced "
                   "[default: ./FAMILY-LAYERSxHIDDEN, e.g. bert-4x256].")
@click.option("--overwrite", "--force", "overwrite", is_flag=True,
              help="Replace zoo's earlier output in the default folder (a folder named with --out is replaced "
                   "whenever zoo wrote it).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Seed for the init of parameters no gene covers: the same command gives the same bytes.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Type of the saved weights.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars or library logs (bars only ever show on a terminal).")
@click.option("--dry-run", is_flag=True, help="Print the plan (learngene, sizes, parameters, disk size, how each "
              "gene is resized, fresh parameters) and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (what zoo.json holds) as JSON.")
@click.option("--like", type=click.Path(), metavar="ZOO_JSON|DIR",
              help="Rebuild a model zoo made, byte for byte: the options its zoo.json records, the same learngene "
                   "(checked by content); options given here override them.")
@registry_option
def materialize_cmd(arch: str | None, learngene_name: str | None, layers: int | None, hidden: int | None,
                    heads: int | None, kv_heads: int | None, head_dim: int | None, ffn: int | None, device: str,
                    strategy: str | None, stats: str, options: tuple[str, ...], out: str | None, overwrite: bool,
                    seed: int, dtype: str, quiet: bool, dry_run: bool, as_json: bool, like: str | None,
                    registry: str | None) -> None:
    """Build a model of any size from a learngene and save it as a Hugging Face folder, with a model card
    (README.md) and zoo.json, which records how to rebuild it byte for byte.

    Sizes you leave out keep the source model's. With --arch and no learngene of that family in the registry,
    one is added first from the family's default source on the Hugging Face Hub (or its local cache).
    """
    _quiet_libraries(quiet)
    chosen: dict[str, Any] = dict(learngene=learngene_name, layers=layers, hidden=hidden, heads=heads,
                                  kv_heads=kv_heads, head_dim=head_dim, ffn=ffn, device=device, strategy=strategy,
                                  stats=stats, options=parse_params(options, "--set"), dtype=dtype, seed=seed)
    if like:
        chosen = _like(like, chosen)
    report = api.materialize_request_to_disk(
        MaterializeRequest(arch, **chosen), out, registry=registry, progress=not quiet,
        overwrite=overwrite or out is not None, argv=["zoo", *_typed_args()],
        on_demand=lambda message: click.echo(message, err=True), dry_run=dry_run,
    )
    if as_json:
        _emit_json(report)
        return
    if dry_run:
        _print_plan(report)
        return
    out = report.get("out", out)
    sizes = report["sizes"]
    click.echo(f"using learngene '{report['learngene']}' ({report['family']}, from {report['source']}); "
               f"choose another with --from NAME (see `zoo learngene list`)")
    shape = ", ".join(f"{k} {v}" for k, v in sizes.items() if k in ("depth", "hidden", "heads", "kv_heads", "ffn"))
    click.echo(f"materialized {report['model_class']} ({shape}; {report['parameters'] / 1e6:.1f}M parameters, "
               f"{dtype}) -> {out}")
    starts = report.get("absent_starts") or {}
    if starts:
        click.echo(f"note: {len(starts)} parameters had no gene and start as their family's adapter says: "
                   f"{', '.join(f'{k} ({v})' for k, v in list(starts.items())[:3])}{' ...' if len(starts) > 3 else ''}")
    random = [name for name in report["fresh_parameters"] if name not in starts]
    if random:
        click.echo(f"note: {len(random)} parameters had no gene and keep random init: "
                   f"{', '.join(random[:4])}{' ...' if len(random) > 4 else ''}")
    if report.get("reset_genes"):
        click.echo(f"note: tuned to the source's last layer, so left at init in this shallower model: "
                   f"{', '.join(report['reset_genes'])}")
    if report.get("kept_user_files"):
        click.echo(f"kept your {', '.join(report['kept_user_files'])} (zoo's model card is not written over it)")
    default_load = f"transformers.{report['model_class']}.from_pretrained({out!r})"
    click.echo(f"load it with: {report.get('load') or default_load}")


# the fields of zoo.json's "rebuild" record (MaterializeRequest.record), by the CLI parameter that sets each
LIKE_PARAMS = {"learngene": "learngene_name", "layers": "layers", "hidden": "hidden", "heads": "heads",
               "kv_heads": "kv_heads", "head_dim": "head_dim", "ffn": "ffn", "positions": None, "device": "device",
               "strategy": "strategy", "stats": "stats", "options": "options", "dtype": "dtype", "seed": "seed",
               "learngene_sha256": None}


def _like(path: str, chosen: dict[str, Any]) -> dict[str, Any]:
    """``chosen`` with what a zoo.json's ``rebuild`` records, except options typed on this command line."""

    file = os.path.join(path, "zoo.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise click.BadParameter(f"{file} does not exist; give a folder zoo materialized, or its zoo.json",
                                 param_hint="--like")
    try:
        with open(file, encoding="utf-8") as fh:
            rebuild = json.load(fh)["rebuild"]
        if not isinstance(rebuild, dict):
            raise TypeError(type(rebuild).__name__)
    except (OSError, ValueError, KeyError, TypeError):
        raise click.BadParameter(f"{file} is not a zoo.json with a 'rebuild' record (what zoo materialize writes)",
                                 param_hint="--like") from None
    ctx = click.get_current_context()
    merged = dict(chosen)
    for key, value in rebuild.items():
        if key not in LIKE_PARAMS:
            continue
        param = LIKE_PARAMS[key]
        if param is None or ctx.get_parameter_source(param) != ParameterSource.COMMANDLINE:
            merged[key] = value
    return merged


def _print_plan(plan: dict[str, Any]) -> None:
    sizes = ", ".join(f"{k} {v}" for k, v in plan["sizes"].items())
    click.echo("plan (nothing written; drop --dry-run to build it):")
    click.echo(f"  learngene   {plan['learngene']} ({plan['family']}, {plan['transform']}, from {plan['source']})")
    click.echo(f"  model       {plan['model_class']}: {sizes}")
    click.echo(f"  size        {plan['parameters'] / 1e6:.1f}M parameters, {plan['disk_bytes'] / 2**20:.1f} MiB as "
               f"{plan['dtype']} -> {plan['out']}")
    click.echo(f"  options     strategy {plan['strategy']}, stats {plan['stats']}, seed {plan['seed']}, "
               f"device {plan['device']}")
    resized = [g for g in plan["genes"] if g["source_shape"] != g["target_shape"]]
    click.echo(f"  genes       {len(plan['genes'])}, {len(resized)} resized:")
    for gene in resized:
        changes = ", ".join(f"{role} {a}->{b}" for role, a, b in zip(gene["axes"], gene["source_shape"],
                                                                     gene["target_shape"]) if a != b)
        click.echo(f"    {gene['name']:<22} {changes}")
    fresh = plan["fresh_parameters"]
    click.echo(f"  fresh       {', '.join(fresh) if fresh else 'none' if fresh is not None else 'known once built'}")
    for name in plan.get("skipped_genes") or []:
        click.echo(f"  skipped     {name} (no room for it in the target)")
    click.echo(f"  command     {plan['command']}")


def _typed_args() -> list[str]:
    """The arguments as typed (``zoo.json`` keeps them beside the canonical rebuild command), registry URLs'
    passwords hidden: the folder may be published."""
    from .registry.store import redact

    typed = getattr(click.get_current_context().find_root().command, "typed_args", [])
    return [redact(arg) if "://" in arg else arg for arg in typed]


def _quiet_libraries(quiet: bool) -> None:
    """Quiet transformers' and huggingface_hub's own bars and logs too (GGUF loading, downloads): all of them
    with --quiet, and their bars when stderr is not a terminal, like zoo's own."""
    if not quiet and sys.stderr.isatty():
        return
    import huggingface_hub.utils
    import transformers.utils.logging as hf_logging

    hf_logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    if quiet:
        hf_logging.set_verbosity_error()


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
@click.option("--json", "as_json", is_flag=True, help="Print the refined learngene as JSON.")
@registry_option
def refine_cmd(source: str, data: str, steps: int, lam: float | None, transform: str, keep: str,
               params: tuple[str, ...], parent: str | None, name: str | None, lr: float, batch: int, seq: int,
               seed: int, dtype: str, device: str, as_json: bool, registry: str | None) -> None:
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
    if as_json:
        _emit_json(refined.to_json())
        return
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


@db.command("vacuum")
@registry_option
def db_vacuum(registry: str | None) -> None:
    """Give back the space of removed learngenes (SQLite keeps freed pages in the file until then)."""

    with registry_session(registry) as reg:
        before, after = reg.vacuum()
        where = reg.where
    sizes = (f": {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"  # type: ignore[operator]  # both or neither
             if before is not None else " (space is reusable)")
    click.echo(f"vacuumed registry {where}{sizes}")


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
        _known(reg, names)
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


def _known(reg: Any, names: tuple[str, ...]) -> None:
    """A name that is not in the registry is a typo, not damage: one line naming the learngenes there are."""

    if not names:
        return
    try:
        present = {info.name for info in reg.list()}
    except ZooError:  # a registry too damaged to list: verify says what it can
        return
    missing = [n for n in names if n not in present]
    if missing:
        raise UnknownNameError("learngene", missing[0], sorted(present), hint="see `zoo learngene list`")


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
    sys.exit(main())  # type: ignore[func-returns-value]
