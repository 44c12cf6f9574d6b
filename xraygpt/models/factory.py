"""The one door in: a model (with its weights) and its eval image processor from a config.

``test.py``, the demo, the tiny-recipe summary, the set-up validator and the benchmarks
all build their model here, so a model loads the same way wherever it is used
(``docs/architecture.md``). Training tasks build theirs here too.

Every registered model class declares the same door: ``from_config(cfg, *, device=None)``
builds the model with the weights ``cfg`` names, on ``device`` (the CPU by default;
``"meta"``: the structure only, nothing loaded).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from xraygpt.common.registry import registry


def build_model(model_cfg: Any, device: str | torch.device | None = None) -> nn.Module:
    """The model a config's ``model`` section names, with the weights it names.

    ``device="meta"`` builds the structure only: parameters with shapes and dtypes, no
    memory and no weight loading (the validator and the model summary use this).
    """
    return registry.get_model_class(model_cfg.arch).from_config(model_cfg, device=device)


def eval_image_processor(cfg: Any) -> Any:
    """The eval image processor: the one a dataset of ``cfg`` (a Config) names, else
    ``blip2_image_eval`` at the model's image size."""
    for ds_cfg in cfg.datasets_cfg.values():
        proc_cfg = OmegaConf.select(ds_cfg, "vis_processor.eval") or OmegaConf.select(
            ds_cfg, "vis_processor.train"
        )
        if proc_cfg is not None:
            return registry.get_processor_class(proc_cfg.name).from_config(proc_cfg)
    image_size = OmegaConf.select(cfg.model_cfg, "image_size", default=None)
    default = OmegaConf.create({"name": "blip2_image_eval", "image_size": image_size})
    return registry.get_processor_class("blip2_image_eval").from_config(default)


def load_model_and_processors(
    cfg: Any, device: str | torch.device | None = None
) -> tuple[nn.Module, Any]:
    """The model of ``cfg`` (a Config) in eval mode, with its weights, and its eval image
    processor."""
    return build_model(cfg.model_cfg, device=device).eval(), eval_image_processor(cfg)
