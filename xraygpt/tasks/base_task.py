"""The task: what a job builds (model, datasets) and what one training step computes.

Runners stay generic; a task says what "a step" means. New kinds of training
(an encoder pretraining stage, a text-only stage) register a subclass.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xraygpt.common.registry import registry


class BaseTask:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def setup_task(cls, cfg: Any) -> BaseTask:
        return cls(cfg)

    def build_model(self, cfg: Any = None) -> nn.Module:
        cfg = cfg or self.cfg
        model_cls = registry.get_model_class(cfg.model_cfg.arch)
        return model_cls.from_config(cfg.model_cfg)

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        """``{dataset name: {split: Dataset}}`` for every dataset in the config."""
        cfg = cfg or self.cfg
        datasets = {}
        for name, ds_cfg in cfg.datasets_cfg.items():
            builder = registry.get_builder_class(name)(ds_cfg)
            datasets[name] = builder.build_datasets()
        return datasets

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        """One forward pass; returns a dict whose ``loss`` the runner back-propagates."""
        return model(samples)
