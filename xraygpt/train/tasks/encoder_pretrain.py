"""``encoder_pretrain``: pretrain the vision encoder on the findings of each image.

Stage 1 of the tiny recipe (``train_configs/xraygpt_tiny_stage1.yaml``). The
full-size XrayGPT starts from an encoder pretrained elsewhere; in miniature
the encoder learns here by multi-label classification of the labelled
findings, the direct signal that CXR encoders are trained with. The model is
an ``encoder_classifier``; a step is its binary cross-entropy loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry
from xraygpt.train.tasks.base_task import BaseTask


@registry.register_task("encoder_pretrain")
class EncoderPretrainTask(BaseTask):
    def build_model(self, cfg: Any = None) -> nn.Module:
        model = super().build_model(cfg)
        if not hasattr(model, "label_names") or not callable(getattr(model, "predict", None)):
            raise ConfigError(
                f"run.task encoder_pretrain trains a classifier (model.arch: encoder_classifier); "
                f"got {type(model).__name__}"
            )
        return model

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        datasets = super().build_datasets(cfg)
        # Fail before training, not at the first unlabelled batch.
        for name, by_split in datasets.items():
            for split, dataset in by_split.items():
                annotations = getattr(dataset, "annotations", None)
                if annotations is None:
                    raise ConfigError(
                        f"encoder_pretrain needs a folder-of-images dataset with labels; "
                        f"datasets.{name} ({type(dataset).__name__}) keeps no annotations"
                    )
                unlabelled = sum(1 for ann in annotations if ann.labels is None)
                if unlabelled:
                    raise ConfigError(
                        f"encoder_pretrain: {unlabelled} of {len(annotations)} annotations of "
                        f"{name}/{split} have no 'labels'; use an annotation file with labels "
                        f"(e.g. the phantom data set)"
                    )
        return datasets

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        out = model(samples)
        if not isinstance(out, Mapping) or not isinstance(out.get("loss"), torch.Tensor):
            raise TypeError(
                f"{type(model).__name__}(samples) must return a dict with a tensor 'loss'"
            )
        return dict(out)
