"""The task: what a job builds (model, datasets) and what one training step computes.

Runners stay generic; a task says what "a step" means. New kinds of training
(an encoder pretraining stage, a text-only stage) register a subclass.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry
from xraygpt.models.factory import build_model


class BaseTask:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def setup_task(cls, cfg: Any) -> BaseTask:
        return cls(cfg)

    def build_model(self, cfg: Any = None) -> nn.Module:
        cfg = cfg or self.cfg
        return build_model(cfg.model_cfg)

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        """``{dataset name: {split: Dataset}}`` for every dataset in the config."""
        cfg = cfg or self.cfg
        datasets = {}
        for name, ds_cfg in cfg.datasets_cfg.items():
            builder = registry.get_builder_class(name)(ds_cfg)
            datasets[name] = builder.build_datasets()
        return datasets

    def train_datasets(self, datasets: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The datasets this task trains on: the ``run.train_splits`` of every dataset.

        Keyed by dataset name (``name/split`` when several splits are named);
        the training loader weighs each by its ``sample_ratio``. A subclass
        that trains on something else overrides this.
        """
        splits = list(self.cfg.run_cfg.train_splits)
        if not splits:
            raise ConfigError("run.train_splits is empty: name the split(s) to train on")
        if not datasets:
            raise ConfigError("the config names no datasets to train on (datasets: section)")
        chosen = {}
        for name, by_split in datasets.items():
            for split in splits:
                if split not in by_split:
                    raise ConfigError(
                        f"dataset {name!r} has no split {split!r} (run.train_splits); "
                        f"it has: {', '.join(sorted(by_split)) or 'none'}"
                    )
                chosen[name if len(splits) == 1 else f"{name}/{split}"] = by_split[split]
        return chosen

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        """One forward pass; returns a dict whose ``loss`` the runner back-propagates."""
        return model(samples)
