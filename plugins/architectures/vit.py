"""Vision transformers: timm ``VisionTransformer`` (ViT, DeiT, distilled DeiT, DINOv2) and transformers ``ViT*``,
``DeiT*`` and ``Dinov2*``, as one family ``vit``.

Both libraries are read into the same genes (see ``vit_common``), so a learngene materializes in either:
``--set format=timm|hf`` (default: the source's library). ``--set img_size=224 --set patch_size=16`` resize the
position embeddings over the 2-D token grid and the patch kernel over its spatial spectrum; ``--set num_classes=N``
copies the classifier when the source has N classes, else leaves it freshly initialized (and says so).

Sources: ``timm/NAME``, ``timm:NAME``, a bare ``vit_*``/``deit_*`` name or an alias (``deit-base``) load through
timm from the hub; ``NAME@FILE`` loads a timm checkpoint on disk; a timm model folder (config.json with an
``architecture``) loads as ``local-dir:``. transformers folders and hub ids go through zoo's own resolver.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import hookimpl
from zoo.errors import InvalidConfigError
from zoo.hf import TransformersAdapter
from zoo_plugins.sources import timm_reader

from . import vit_hf, vit_timm
from .vit_common import ViTSpec, pair

if TYPE_CHECKING:
    import torch

FORMATS = {"timm": "timm", "hf": "hf", "transformers": "hf"}


class ViTAdapter(TransformersAdapter):
    name = "vit"
    description = "vision transformers: timm ViT/DeiT/DINOv2 and transformers ViT, DeiT, Dinov2"
    arch_aliases = ("deit", "dinov2")
    model_types = (vit_timm.MODEL_TYPE, "vit", "deit", "dinov2")
    # transformers checkpoints on the hub (the timm aliases, deit-base & co, are resolved in vit_timm)
    source_aliases = {"dinov2-small-hf": "facebook/dinov2-small", "dinov2-base-hf": "facebook/dinov2-base",
                      "vit-base-hf": "google/vit-base-patch16-224",
                      "deit-base-hf": "facebook/deit-base-distilled-patch16-224"}
    size_options = ("layers", "hidden", "heads", "ffn")
    lazy_read = False  # to_genome reads through the library's layout
    streamable = False  # built, and saved, by the library (timm or transformers) the config names
    target_options = {
        "format": "timm or hf: the library the model is written for [default: the source's]",
        "img_size": "input image size, N or [H, W]: the position embeddings are resized over the token grid",
        "patch_size": "patch size, N or [H, W]: the patch kernel is resized over its spatial spectrum",
        "num_classes": "classifier classes (0: none); copied when the source has as many, else freshly initialized",
    }

    # -- configs -------------------------------------------------------------------------------------------------
    @staticmethod
    def spec(config: dict[str, Any]) -> ViTSpec:
        if config.get("model_type") == vit_timm.MODEL_TYPE:
            return vit_timm.spec_of(config)
        return vit_hf.spec_of(config)

    def config_for(self, spec: ViTSpec, base: dict[str, Any] | None) -> dict[str, Any]:
        """``spec`` in its library's config form, keeping ``base``'s other settings when it is that library's."""
        if base is not None and self.spec(base).library != spec.library:
            base = None
        return (vit_timm if spec.library == "timm" else vit_hf).config_of(spec, base)

    def sizes(self, config: dict[str, Any]) -> dict[str, int]:
        return self.spec(config).sizes()

    def finish_config(self, config: dict[str, Any], sizes: Any) -> dict[str, Any]:
        spec = replace(self.spec(config), depth=sizes["depth"], hidden=sizes["hidden"], heads=sizes["heads"],
                       ffn=sizes["ffn"])
        return self.config_for(spec, config)

    def parameter_count(self, config: dict[str, Any]) -> int:
        return self.spec(config).parameter_count()

    def apply_options(self, config: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(config)
        changes: dict[str, Any] = {}
        if "format" in options:
            if options["format"] not in FORMATS:
                raise InvalidConfigError(f"format must be one of {', '.join(FORMATS)}, got {options['format']!r}")
            changes["library"] = FORMATS[options["format"]]
        if "img_size" in options:
            changes["img_size"] = pair(options["img_size"], "img_size")
        if "patch_size" in options:
            changes["patch_size"] = pair(options["patch_size"], "patch_size")
        if "num_classes" in options:
            n = options["num_classes"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise InvalidConfigError(f"num_classes must be a whole number >= 0, got {n!r}")
            changes["num_classes"] = n
        target = replace(spec, **changes)
        if any(i < p for i, p in zip(target.img_size, target.patch_size)):
            raise InvalidConfigError(f"img_size {target.img_size} is smaller than patch_size {target.patch_size}")
        if target.library == "timm":
            vit_timm.require_timm("writing a timm model (--set format=timm)")
        return self.config_for(target, config)

    # -- genes and models ----------------------------------------------------------------------------------------
    def layout(self, config: dict[str, Any]) -> Any:
        return vit_timm.LAYOUT if self.spec(config).library == "timm" else vit_hf.layout_for(config)

    def to_genome(self, state_dict: Any, config: dict[str, Any]) -> Any:
        return self.layout(config).read(state_dict, config)

    def build(self, config: dict[str, Any], genome: Any, device: Any = "cpu") -> torch.nn.Module:
        timm_model = self.spec(config).library == "timm"
        model = vit_timm.create(config, device) if timm_model else vit_hf.create(config, genome, device)
        template = model.state_dict()
        values, unused = self.layout(config).write(genome, config, template)
        for key, value in values.items():
            if template[key].shape != value.shape:
                raise InvalidConfigError(f"gene for '{key}' has shape {tuple(value.shape)}, "
                                         f"model wants {tuple(template[key].shape)}")
        model.load_state_dict(values, strict=False)
        model.eval()
        model.zoo_fresh_parameters = sorted({k for k, _ in model.named_parameters()} - set(values))
        if timm_model:
            vit_timm.init_fresh(model, model.zoo_fresh_parameters)
        model.zoo_unused_genes = unused  # e.g. a distillation token the target has no place for
        model.zoo_config = config
        return model

    def save(self, model: torch.nn.Module, out_dir: Any) -> None:
        if self.spec(model.zoo_config).library == "timm":
            vit_timm.save(model, model.zoo_config, Path(out_dir))
        else:
            model.save_pretrained(out_dir, safe_serialization=True)

    def load_code(self, config: dict[str, Any], out_dir: Path) -> str:
        """The Python call that loads what :meth:`save` wrote to ``out_dir``."""
        if self.spec(config).library == "timm":
            return vit_timm.load_code(config, out_dir)
        return f"transformers.{config['architectures'][0]}.from_pretrained({str(out_dir)!r})"


@hookimpl
def register_architectures(register):
    register(ViTAdapter())


@hookimpl
def resolve_source(source):
    return timm_reader.resolve(source)
