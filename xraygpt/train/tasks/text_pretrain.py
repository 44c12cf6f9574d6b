"""``text_pretrain``: train the LLM on the reports alone, in the conversation format.

Stage 2 of the tiny recipe (``train_configs/xraygpt_tiny_stage2.yaml``), the
miniature of Vicuna's fine-tuning on radiology conversations that XrayGPT
starts from. The model is a ``mini_gpt4``; only its LLM trains. A sample is
the alignment prompt with the image slot left empty, then the report:

    [bos] ###Patient: <Img></Img> Describe the given chest x-ray image in detail. ###Doctor: <report>###

tokenised exactly as the alignment stage tokenises it (the text before and
after ``<ImageHere>`` separately), so that stage only has to fill the slot.
Half the batches render the question as the chat demo does instead (the
conversation's system text first, see :func:`chat_prompts`).
The loss is the LLM's cross-entropy over the report tokens: without an image,
its value on held-out reports estimates the text-only floor that an
image-reading model must get below (from above: a 5x longer text-only run
reaches 0.48 nats/token on the phantom val reports, and memorises the
training reports rather than going lower).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry
from xraygpt.data.losses import ReportTextDataset, chat_prompts, report_loss, text_prompts
from xraygpt.train.tasks.base_task import BaseTask

log = logging.getLogger(__name__)

# Share of batches whose prompt is rendered as in the chat demo (system text first).
CHAT_SHARE = 0.5


@registry.register_task("text_pretrain")
class TextPretrainTask(BaseTask):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._chat_prompts: dict[int, list[str]] = {}  # per model built by this task

    def build_model(self, cfg: Any = None) -> nn.Module:
        model = super().build_model(cfg)
        if not hasattr(model, "llama_model") or not hasattr(model, "llama_tokenizer"):
            raise ConfigError(
                f"run.task text_pretrain trains the LLM of a mini_gpt4; got {type(model).__name__}"
            )
        if getattr(model, "freeze_llm", True):
            raise ConfigError(
                "run.task text_pretrain trains the LLM: set model.freeze_llm: false "
                "(and model.llm_dtype: float32)"
            )
        # Only the LLM sees text-only batches; anything else left trainable would be
        # saved into the checkpoint untrained and overwrite good weights downstream.
        frozen = []
        for name, param in model.named_parameters():
            if not name.startswith("llama_model.") and param.requires_grad:
                param.requires_grad_(False)
                frozen.append(name.split(".")[0])
        self._chat_prompts[id(model)] = chat_prompts(model)
        if frozen:
            log.info(
                "text_pretrain: froze %s (only the LLM trains)", ", ".join(sorted(set(frozen)))
            )
        return model

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        datasets = super().build_datasets(cfg)
        return {
            name: {split: ReportTextDataset(ds, name) for split, ds in by_split.items()}
            for name, by_split in datasets.items()
        }

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        if isinstance(model, DistributedDataParallel):
            # The loss bypasses the wrapper's forward, so DDP would not sync the gradients.
            raise ConfigError(
                "run.task text_pretrain runs in one process: start it with python train.py, "
                "not torchrun (the tiny LLM needs no more)"
            )
        chats = self._chat_prompts.get(id(model)) or []
        if chats and random.random() < CHAT_SHARE:
            prompt = random.choice(chats)
        else:
            prompt = random.choice(text_prompts(model))
        return {"loss": report_loss(model, samples["caption"], prompt)}
