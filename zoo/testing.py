"""Contract checks for zoo plugin authors, and a pytest plugin with ``zoo_`` fixtures.

Run them on your own adapter, transform or resize strategy::

    from zoo.testing import check_adapter_round_trip, check_resize

    def factory():
        return MyModel(MyConfig(num_layers=2, hidden_size=32, num_heads=4, vocab_size=100))

    def test_round_trip():
        check_adapter_round_trip(MyAdapter(), factory)

    def test_resize():
        check_resize(MyAdapter(), factory, layers=3, hidden=48)

Every check raises :class:`AssertionError` with a message naming what broke (the parameter, gene or axis), so a
failure reads well in a pytest report. Nothing here downloads anything or touches the user's registry.

zoo installs this module as a pytest plugin (entry point ``pytest11``), so the fixtures below exist in every test
session of an environment that has zoo: :func:`zoo_registry`, :func:`zoo_register_plugin`, :func:`zoo_cli`.
pytest imports it at start-up in every such session, which is why torch and transformers are only imported when a
check runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from .adapters import SIZE_OPTIONS
from .errors import InvalidConfigError
from .genes import DEPTH, Gene, resizable, shape_for
from .inputs import check_params
from .materialization import interpolate_depth, materialize
from .extraction import extract, parse_keep
from .plugin_host import catalog, register_plugin, unregister_plugin
from .transforms import ResizeStrategy, Transform

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_adapter_round_trip", "check_cli_lists", "check_resize", "check_resize_strategy",
    "check_transform_inverse", "perturb", "tiny_model",
]


# -- building blocks ----------------------------------------------------------------------------------------------
def tiny_model(model_factory: Callable[[], Any], seed: int = 0, noise: float = 0.02) -> Any:
    """``model_factory()`` in eval mode with every parameter nudged by seeded noise (:func:`perturb`)."""
    import torch

    torch.manual_seed(seed)
    return perturb(model_factory(), noise).eval()


def perturb(model: Any, noise: float = 0.02) -> Any:
    """``model`` with ``noise`` times standard normal noise added to every parameter, in place, drawn from torch's
    generator as it stands.

    A fresh model has all-zero biases and all-one norms; with those, a mapping that swaps two biases would still
    round-trip. The noise makes every parameter distinct, so a wrong mapping cannot pass.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    return model


def _config(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise AssertionError(f"model_factory returned {type(model).__name__}, which has no transformers config")
    return config.to_dict()


def _component(kind: str, value: Any) -> Any:
    """A registered component by name, or the object itself."""
    if not isinstance(value, str):
        return value
    return catalog().transform(value) if kind == "transform" else catalog().resize_strategy(value)


def _params(transform: Any, params: Mapping[str, Any] | None) -> dict[str, Any]:
    return check_params(transform, dict(params or {}))


def _genome(adapter: Any, model: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """The adapter's genes for ``model``, checked against the sizes the adapter reads from its config."""
    with _calling(f"adapter '{adapter.name}': sizes() / to_genome()"):
        sizes = adapter.sizes(config)
        genome = adapter.to_genome(model.state_dict(), config)
    if not genome:
        raise AssertionError(f"adapter '{adapter.name}' extracted no genes")
    for name, gene in genome.items():
        if not isinstance(gene, Gene):
            raise AssertionError(f"gene '{name}' is a {type(gene).__name__}, not a zoo.genes.Gene")
        try:
            expected = shape_for(gene.axes, sizes)
        except KeyError as exc:
            raise AssertionError(f"gene '{name}' has axes {gene.axes}, but adapter.sizes() gives {sorted(sizes)}: "
                                 f"add the missing roles to config_keys (or override sizes())") from exc
        if tuple(gene.tensor.shape) != expected:
            raise AssertionError(f"gene '{name}' has shape {tuple(gene.tensor.shape)}, but its axes {gene.axes} "
                                 f"at the config's sizes give {expected}")
    return genome


@contextmanager
def _calling(what: str) -> Iterator[None]:
    """Turn an exception from plugin code into a failed check that says which call raised it."""
    try:
        yield
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _fmt(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# -- architecture adapters ----------------------------------------------------------------------------------------
def check_adapter_round_trip(adapter: Any, model_factory: Callable[[], Any], *, transform: Any = "dct",
                             params: Mapping[str, Any] | None = None, atol: float = 1e-5) -> Any:
    """Extract a tiny model with ``keep=1``, materialize it at the same config and compare every weight.

    :param adapter: the adapter under test (it need not be registered).
    :param model_factory: returns a small, randomly initialized ``transformers`` model of the adapter's family.
    :param transform: a transform name or object (``"dct"`` by default).
    :returns: the rebuilt model.
    """
    source = tiny_model(model_factory)
    config = _config(source)
    if config.get("model_type") not in getattr(adapter, "model_types", ()):
        raise AssertionError(f"adapter '{adapter.name}' lists model_types {tuple(adapter.model_types)}, so zoo "
                             f"would not pick it for this model (model_type {config.get('model_type')!r})")
    transform = _component("transform", transform)
    params = _params(transform, params)
    genome = _genome(adapter, source, config)
    records = extract(genome, transform, {"*": 1.0}, params)
    with _calling(f"adapter '{adapter.name}': target_config()"):
        target = adapter.target_config(config)
    if adapter.sizes(target) != adapter.sizes(config):
        raise AssertionError(f"target_config() with no sizes requested changed the sizes: {adapter.sizes(config)} "
                             f"-> {adapter.sizes(target)}")
    genome_out = materialize(records, adapter.sizes(target), transform, _component("strategy", "spectral"), params)
    with _calling(f"adapter '{adapter.name}': build()"):
        rebuilt = adapter.build(target, genome_out)
    want, have = source.state_dict(), rebuilt.state_dict()
    missing = sorted(set(want) - set(have))
    fresh = list(getattr(rebuilt, "zoo_fresh_parameters", []))
    wrong = []
    for key in sorted(set(want) & set(have)):
        a, b = want[key], have[key]
        if a.shape != b.shape:
            wrong.append(f"{key} (shape {tuple(b.shape)}, want {tuple(a.shape)})")
        elif a.is_floating_point() and (a.float() - b.float()).abs().max().item() > atol:
            wrong.append(f"{key} (max error {(a.float() - b.float()).abs().max().item():.2g})")
        elif not a.is_floating_point() and not bool((a == b).all()):
            wrong.append(f"{key} (values differ)")
    if missing or wrong:
        lines = [f"adapter '{adapter.name}' does not round-trip: {len(wrong) + len(missing)} of {len(want)} "
                 f"weights differ after extract(keep=1) -> materialize at the same config"]
        if wrong:
            lines.append(f"  differ: {_fmt(wrong)}")
        if missing:
            lines.append(f"  missing from the rebuilt model: {_fmt(missing)}")
        if fresh:
            lines.append(f"  no gene covers (random init): {_fmt(fresh)}; add WeightMaps for them")
        lines.append(f"  check each WeightMap's key, axes, part and transposed ({len(genome)} genes, "
                     f"{adapter.sizes(config).get(DEPTH, '?')} layers)")
        raise AssertionError("\n".join(lines))
    return rebuilt


def _default_sizes(adapter: Any, config: Mapping[str, Any]) -> dict[str, int]:
    """One more layer and one more head of the same size (one more key/value group under grouped-query
    attention), so depth, width, heads and ffn all change."""
    sizes = adapter.sizes(config)
    out: dict[str, int] = {}
    if "layers" in adapter.size_options and "depth" in sizes:
        out["layers"] = sizes["depth"] + 1
    if "hidden" in adapter.size_options and "hidden" in sizes:
        heads_per_group = sizes["heads"] // sizes["kv_heads"] if sizes.get("kv_heads") else 1
        out["hidden"] = sizes["hidden"] + sizes.get("head_dim", 8) * heads_per_group
    return out


def _layer_stats(x: torch.Tensor, stacked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(x.shape[0], -1) if stacked else x.reshape(1, -1)
    return flat.mean(dim=1), flat.std(dim=1, unbiased=False)


def check_resize(adapter: Any, model_factory: Callable[[], Any], *, transform: Any = "dct",
                 strategy: Any = None, params: Mapping[str, Any] | None = None, keep: float | str = 1.0,
                 rtol: float = 1e-3, **sizes: int) -> Any:
    """Materialize a tiny model at other sizes and check shapes and per-layer statistics.

    Checks that the target config has the requested sizes, every gene has the shape its axes give at those sizes,
    axes that are never resized (vocabularies) kept their length, each layer's mean and std are the source's
    interpolated over relative depth (the ``restore`` rule; not for strategies with ``resize_weights``, which define
    their own), and that the adapter builds a model with finite
    parameters whose config reports the same sizes.

    :param sizes: size options as for :func:`zoo.materialize` (``layers``, ``hidden``, ``heads``, ``ffn``, ...);
        by default one more layer and one more head (one more KV group under GQA).
    :returns: the resized model, for you to run a forward pass on.
    """
    import torch

    source = tiny_model(model_factory)
    config = _config(source)
    transform = _component("transform", transform)
    strategy = _component("strategy", strategy or getattr(transform, "default_strategy", "spectral"))
    params = _params(transform, params)
    records = extract(_genome(adapter, source, config), transform, parse_keep(keep), params)
    requested = sizes or _default_sizes(adapter, config)
    with _calling(f"adapter '{adapter.name}': target_config({', '.join(f'{k}={v}' for k, v in requested.items())})"):
        target = adapter.target_config(config, **requested)
    target_sizes = adapter.sizes(target)
    for option, value in requested.items():
        if target_sizes.get(SIZE_OPTIONS[option]) != value:
            raise AssertionError(f"asked for {option}={value}, but adapter.sizes(target_config(...)) gives "
                                 f"{SIZE_OPTIONS[option]}={target_sizes.get(SIZE_OPTIONS[option])}")
    genome = materialize(records, target_sizes, transform, strategy, params)
    weight_level = getattr(strategy, "resize_weights", None) is not None
    for name, gene in genome.items():
        record = records[name]
        want = shape_for(record.axes, target_sizes)
        if tuple(gene.tensor.shape) != want:
            raise AssertionError(f"gene '{name}' came out {tuple(gene.tensor.shape)}, its axes {record.axes} "
                                 f"give {want}")
        for role, before, after in zip(record.axes, record.source_shape, want):
            if not resizable(role) and before != after:
                raise AssertionError(f"gene '{name}': axis '{role}' is never resized but went {before} -> {after}")
        if not torch.isfinite(gene.tensor).all():
            raise AssertionError(f"gene '{name}' has non-finite values after resizing")
        per_layer = gene.tensor[0].numel() if record.stacked else gene.tensor.numel()
        if per_layer < 2 or weight_level:
            continue  # one number per layer has std 0; weight-level strategies define their own statistics
        mean, std = _layer_stats(gene.tensor.double(), record.stacked)
        src_mean, src_std = record.mean.double().reshape(-1), record.std.double().reshape(-1)
        if record.stacked:
            src_mean, src_std = interpolate_depth(src_mean, want[0]), interpolate_depth(src_std, want[0])
        tol = rtol * src_std.abs() + 1e-6
        bad = ((mean - src_mean).abs() > tol) | ((std - src_std).abs() > tol)
        if bad.any():
            layer = int(bad.nonzero()[0])
            raise AssertionError(
                f"gene '{name}' layer {layer}: mean {mean[layer]:.4g} std {std[layer]:.4g}, but the source "
                f"statistics interpolated over depth are mean {src_mean[layer]:.4g} std {src_std[layer]:.4g}")
    with _calling(f"adapter '{adapter.name}': build() at {target_sizes}"):
        model = adapter.build(target, genome)
    built = adapter.sizes(_config(model))
    differ = {role: (built.get(role), n) for role, n in target_sizes.items() if built.get(role) != n}
    if differ:
        raise AssertionError("the built model's config reports other sizes than the target: "
                             + ", ".join(f"{r} {b} (want {n})" for r, (b, n) in differ.items()))
    bad_params = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad_params:
        raise AssertionError(f"non-finite parameters in the resized model: {_fmt(bad_params)}")
    return model


# -- transforms and resize strategies -----------------------------------------------------------------------------
def _check_named(obj: Any, protocol: type, kind: str) -> None:
    for attr in ("name", "description"):
        if not isinstance(getattr(obj, attr, None), str) or not getattr(obj, attr):
            raise AssertionError(f"{kind} {obj!r} needs a non-empty string '{attr}'")
    if not isinstance(obj, protocol):
        raise AssertionError(f"{kind} '{obj.name}' does not implement zoo.transforms.{protocol.__name__}")


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check_transform_inverse(transform: Any, *, params: Mapping[str, Any] | None = None,
                            shape: Sequence[int] = (5, 8, 12), atol: float = 1e-5) -> None:
    """The transform contract, along every axis of a random tensor of ``shape``.

    * ``analyze(x, dim, keep=n)`` then ``synthesize(c, dim, n)`` gives ``x`` back (``n`` = the axis length);
    * ``analyze`` with a smaller ``keep`` returns between ``keep`` and ``n`` coefficients along ``dim``;
    * ``synthesize`` to other lengths (1, shorter, longer) gives that length, leaves other axes alone, and is finite;
    * ``analyze`` is linear and treats every fiber along ``dim`` alike (a slice's coefficients are the slice of the
      whole's);
    * ``parameters`` defaults pass ``validate_params``.

    :param transform: a transform name or object.
    :param params: transform parameters (defaults from ``transform.parameters`` fill the rest).
    """
    import torch

    transform = _component("transform", transform)
    _check_named(transform, Transform, "transform")
    params = _params(transform, params)
    torch.manual_seed(0)
    x = torch.randn(*shape)
    for dim, n in enumerate(shape):
        coeffs = transform.analyze(x, dim, n, **params)
        back = transform.synthesize(coeffs, dim, n, **params)
        if tuple(back.shape) != tuple(x.shape):
            raise AssertionError(f"transform '{transform.name}': synthesize(analyze(x, {dim}, keep={n}), {dim}, {n}) "
                                 f"has shape {tuple(back.shape)}, want {tuple(x.shape)}")
        error = _max_error(back, x)
        if error > atol:
            raise AssertionError(f"transform '{transform.name}' is not inverted along axis {dim} (length {n}): "
                                 f"analyze with keep={n} then synthesize gives max error {error:.3g} > {atol}")
        for keep in sorted({1, max(1, n // 2)}):
            block = transform.analyze(x, dim, keep, **params)
            others = [s for d, s in enumerate(block.shape) if d != dim]
            if others != [s for d, s in enumerate(shape) if d != dim] or not keep <= block.shape[dim] <= n:
                raise AssertionError(f"transform '{transform.name}': analyze(x of {tuple(shape)}, dim={dim}, "
                                     f"keep={keep}) has shape {tuple(block.shape)}; want between {keep} and {n} "
                                     f"coefficients along axis {dim} and the other axes unchanged")
            for size in sorted({1, max(1, n - 1), n + 3, 2 * n}):
                out = transform.synthesize(block, dim, size, **params)
                want = tuple(size if d == dim else s for d, s in enumerate(shape))
                if tuple(out.shape) != want:
                    raise AssertionError(f"transform '{transform.name}': synthesize({tuple(block.shape)}, dim={dim}, "
                                         f"size={size}) has shape {tuple(out.shape)}, want {want}")
                if not torch.isfinite(out).all():
                    raise AssertionError(f"transform '{transform.name}': synthesize to size {size} along axis "
                                         f"{dim} is not finite")
        _check_linear_per_fiber(transform, params, x, dim, max(1, n // 2), atol)


def _check_linear_per_fiber(transform: Any, params: Mapping[str, Any], x: Any, dim: int, keep: int,
                            atol: float) -> None:
    """Extraction applies ``analyze`` to slices of a layer and folds the z-score into the kept block
    (``analyze(x - m) == analyze(x) - m * analyze(1)``): both need a transform that is linear and treats every
    fiber along ``dim`` alike."""
    import torch

    def analyze(t: Any) -> Any:
        return transform.analyze(t, dim, keep, **params)

    y = torch.randn_like(x)
    error = _max_error(analyze(2 * x - 0.5 * y + 0.25),
                       2 * analyze(x) - 0.5 * analyze(y) + 0.25 * analyze(torch.ones_like(x)))
    if error > atol * 10:
        raise AssertionError(f"transform '{transform.name}': analyze along axis {dim} is not linear (max error "
                             f"{error:.3g}); zoo's extraction needs analyze(a x + b y) == a analyze(x) + b analyze(y)")
    other = next((d for d in range(x.dim()) if d != dim and x.shape[d] > 1), None)
    if other is not None:
        part = analyze(x.narrow(other, 1, x.shape[other] - 1))
        error = _max_error(part, analyze(x).narrow(other, 1, x.shape[other] - 1))
        if error > atol:
            raise AssertionError(f"transform '{transform.name}': analyze along axis {dim} of a slice along axis "
                                 f"{other} differs from the same slice of the whole (max error {error:.3g}); "
                                 f"zoo's extraction transforms big layers in slices")


def check_resize_strategy(strategy: Any, *, transform: Any = "dct", params: Mapping[str, Any] | None = None,
                          axes: Sequence[str] = ("depth", "hidden", "vocab"), shape: Sequence[int] = (4, 12, 10),
                          targets: Iterable[Sequence[int]] = ((2, 8, 10), (6, 20, 10), (1, 12, 10)),
                          atol: float = 1e-5) -> None:
    """The resize-strategy contract on a random gene with ``axes`` and ``shape``.

    * full coefficients resized to the source shape give the signal back;
    * full and half-kept coefficients resized to each of ``targets`` have that shape and are finite; a strategy may
      decline a target it cannot build (a shrink-only one asked to grow) with :class:`zoo.InvalidConfigError`, but
      not every target;
    * a strategy asked to change a never-resized axis (``vocab``) raises rather than silently resizing it.
    """
    import torch

    strategy = _component("strategy", strategy)
    _check_named(strategy, ResizeStrategy, "resize strategy")
    transform = _component("transform", transform)
    params = _params(transform, params)
    torch.manual_seed(0)
    x = torch.randn(*shape)

    def analyze(keep_ratio: float) -> torch.Tensor:
        out = x
        for dim, role in enumerate(axes):
            if resizable(role):
                out = transform.analyze(out, dim, max(1, round(shape[dim] * keep_ratio)), **params)
        return out

    full, half = analyze(1.0), analyze(0.5)
    with _calling(f"resize strategy '{strategy.name}': resize to the source shape {tuple(shape)}"):
        back = strategy.resize(full, tuple(axes), tuple(shape), transform, params)
    error = _max_error(back, x)
    if error > atol:
        raise AssertionError(f"resize strategy '{strategy.name}' does not give the signal back when the target is "
                             f"the source shape {tuple(shape)} and every coefficient is kept "
                             f"(got shape {tuple(back.shape)}, max error {error:.3g})")
    targets = [tuple(t) for t in targets]
    built = 0
    for coeffs, label in ((full, "full"), (half, "half-kept")):
        for target in targets:
            try:
                out = strategy.resize(coeffs, tuple(axes), target, transform, params)
            except InvalidConfigError:  # declined: a size this strategy does not build
                continue
            built += 1
            if tuple(out.shape) != tuple(target):
                raise AssertionError(f"resize strategy '{strategy.name}': {label} coefficients {tuple(coeffs.shape)} "
                                     f"resized to {tuple(target)} came out {tuple(out.shape)}")
            if not torch.isfinite(out).all():
                raise AssertionError(f"resize strategy '{strategy.name}': resize to {tuple(target)} is not finite")
    if targets and not built:
        raise AssertionError(f"resize strategy '{strategy.name}' declined every target {targets}")
    fixed = [d for d, role in enumerate(axes) if not resizable(role)]
    if fixed:
        wrong = tuple(s + 1 if d == fixed[0] else s for d, s in enumerate(shape))
        try:
            strategy.resize(full, tuple(axes), wrong, transform, params)
        except Exception:
            return
        raise AssertionError(f"resize strategy '{strategy.name}' resized axis '{axes[fixed[0]]}', which is never "
                             f"resized; raise instead")


# -- CLI visibility -----------------------------------------------------------------------------------------------
def _plugins_json(in_process: bool) -> dict[str, Any]:
    if in_process:
        from .cli import cli

        result = CliRunner().invoke(cli, ["plugins", "--json"])
        if result.exit_code != 0:
            raise AssertionError(f"`zoo plugins --json` failed: {result.output}")
        return json.loads(result.output)
    process = subprocess.run([sys.executable, "-m", "zoo.cli", "plugins", "--json"], capture_output=True, text=True,
                             timeout=300, env=os.environ.copy())
    if process.returncode != 0:
        raise AssertionError(f"`zoo plugins --json` exited {process.returncode}: {process.stderr.strip()}")
    return json.loads(process.stdout)


def check_cli_lists(plugin: str, *, architectures: Iterable[str] = (), transforms: Iterable[str] = (),
                    resize_strategies: Iterable[str] = (), in_process: bool = False) -> dict[str, Any]:
    """``zoo plugins --json`` lists ``plugin`` (its entry-point name) with the given names.

    By default this runs ``zoo`` in a fresh process, so it sees exactly what an installed entry point provides.
    ``in_process=True`` asks this process's CLI instead (plugins registered at run time show up too).

    :returns: the plugin's entry in ``zoo plugins --json``.
    """
    data = _plugins_json(in_process)
    listed = {row["name"]: row for row in data.get("plugins", [])}
    if plugin not in listed:
        error = data.get("errors", {}).get(plugin)
        if error:
            raise AssertionError(f"zoo plugin '{plugin}' failed to load: {error}")
        raise AssertionError(f"`zoo plugins --json` does not list '{plugin}'; it lists {_fmt(sorted(listed), 20)}. "
                             f"Is the package installed, with an entry point in group 'zoo' named '{plugin}'?")
    row = listed[plugin]
    for kind, names in (("architectures", architectures), ("transforms", transforms),
                        ("resize_strategies", resize_strategies)):
        absent = sorted(set(names) - set(row.get(kind, [])))
        if absent:
            raise AssertionError(f"zoo plugin '{plugin}' does not register {kind.replace('_', ' ')} "
                                 f"{', '.join(absent)}; it registers {row.get(kind) or 'none'}")
    return row


# -- pytest fixtures ----------------------------------------------------------------------------------------------
@pytest.fixture()
def zoo_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh registry file for this test; ``ZOO_REGISTRY`` points at it, so the API and CLI use it by default."""
    path = tmp_path / "zoo-registry.db"
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    return path


@pytest.fixture()
def zoo_register_plugin() -> Any:
    """``register(plugin, name=None) -> name``: register a plugin for this test only (unregistered afterwards)."""
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> str:
        names.append(register_plugin(plugin, name=name))
        return names[-1]

    yield register
    for name in reversed(names):
        unregister_plugin(name)


@pytest.fixture()
def zoo_cli() -> Callable[..., Result]:
    """``run(*args) -> click Result``: the ``zoo`` CLI in this process (plugins registered at run time included)."""
    from .cli import cli

    def run(*args: Any) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args])

    return run
