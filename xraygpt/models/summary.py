"""Parameter counts of a model config, built on the meta device (no weights, no memory).

    xraygpt summary --cfg-path xraygpt/configs/models/minigpt4_vicuna.yaml

prints JSON: each top-level module's parameter count (total and trainable)
and the totals. ``--cfg-path`` may be any YAML with a ``model:`` section (a
train or eval config, or a model default); only that section is read, merged
over its ``model_type`` default and ``--options model.key=value``. Without a
Vicuna folder the LLM comes from ``llama_preset`` (LLaMA-7B if unset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from xraygpt.common.config import Config, ConfigError, load_yaml, parse_options
from xraygpt.models.factory import build_model


def load_model_config(cfg_path: str | Path, options: list[str] | None = None) -> DictConfig:
    """The validated ``model`` section of a YAML: default < file < ``--options``.

    The merge and the schema check are :class:`Config`'s, on the file's ``model``
    section alone: its other sections are not read.
    """
    user = load_yaml(cfg_path)
    if "model" not in user:
        raise ConfigError(f"{cfg_path} has no 'model' section")
    extra = [k for k in parse_options(options) if k != "model"]
    if extra:
        raise ConfigError(f"only model.* options apply here, got: {', '.join(map(str, extra))}")
    return Config(cfg_path, options, user_config={"model": user.model}).model_cfg


def build_meta_model(model_cfg: DictConfig) -> torch.nn.Module:
    """The model of ``model_cfg`` on the meta device: shapes and names only."""
    return build_model(model_cfg, device="meta")


def millions(n: int) -> float:
    """``n`` in millions to 4 significant digits (985.9, 3.15)."""
    return float(f"{n / 1e6:.4g}")


def parameter_summary(model: torch.nn.Module) -> dict[str, Any]:
    modules: dict[str, dict[str, float | int]] = {}
    for name, param in model.named_parameters():
        head = name.split(".", 1)[0]
        entry = modules.setdefault(head, {"params": 0, "trainable": 0})
        entry["params"] += param.numel()
        if param.requires_grad:
            entry["trainable"] += param.numel()
    for entry in modules.values():
        entry["params_M"] = millions(int(entry["params"]))
        entry["trainable_M"] = millions(int(entry["trainable"]))
    total = sum(int(e["params"]) for e in modules.values())
    trainable = sum(int(e["trainable"]) for e in modules.values())
    return {
        "modules": modules,
        "total": total,
        "total_M": millions(total),
        "trainable": trainable,
        "trainable_M": millions(trainable),
    }
