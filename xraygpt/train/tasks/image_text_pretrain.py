"""``image_text_pretrain``: the task of both XrayGPT stages.

A step is the model's captioning loss on a batch of (image, report) pairs
(docs/recipe.md §3); stage 1 and stage 2 differ only in their model and data config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xraygpt.common.registry import registry
from xraygpt.train.tasks.base_task import BaseTask


@registry.register_task("image_text_pretrain")
class ImageTextPretrainTask(BaseTask):
    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        out = model(samples)
        loss = out.get("loss") if isinstance(out, dict) else None
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            name = type(getattr(model, "module", model)).__name__
            raise TypeError(
                f"image_text_pretrain expects {name}(samples) to return a dict with a scalar "
                f"tensor 'loss'; got {type(out).__name__}"
                + (f" with keys {sorted(out)}" if isinstance(out, dict) else "")
            )
        return out
