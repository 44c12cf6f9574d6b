"""``conversation_sft``: fine-tune the LLM alone on conversations (FastChat-style SFT).

The step XrayGPT's Vicuna went through before the image stages (medical and
radiology conversations). The model is a ``causal_lm`` (full fine-tuning, or
LoRA adapters with ``model.lora``); the data are ``datasets.conversations``
files (:mod:`xraygpt.data.conversations`), tokenised with the model's
tokenizer in the template the dataset names. The loss is the mean
cross-entropy over the assistant tokens of the batch (answers and the
separator ending each); every other token is context only.

Conversations cut at ``max_length`` are counted: at build time for the whole
corpus, and in the training log for each epoch of ``run.iters_per_epoch``
iterations.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry
from xraygpt.data.conversations import ConversationCorpus
from xraygpt.data.losses import sft_batch, unwrap
from xraygpt.train.tasks.base_task import BaseTask

log = logging.getLogger(__name__)


@registry.register_task("conversation_sft")
class ConversationSFTTask(BaseTask):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self._calls = 0
        self._rows = 0
        self._truncated = 0

    def _tokenizer(self, cfg: Any) -> Any:
        arch = cfg.model_cfg.arch
        if arch != "causal_lm":
            raise ConfigError(
                f"run.task conversation_sft trains a causal_lm (the LLM alone); model.arch "
                f"is {arch!r}"
            )
        from xraygpt.models.causal_lm import build_tokenizer

        return build_tokenizer(cfg.model_cfg)

    def build_model(self, cfg: Any = None) -> nn.Module:
        cfg = cfg or self.cfg
        self._tokenizer(cfg)  # the arch check
        return super().build_model(cfg)

    def build_datasets(self, cfg: Any = None) -> dict[str, dict[str, Any]]:
        """Every conversation corpus tokenised with the model's tokenizer."""
        cfg = cfg or self.cfg
        corpora = super().build_datasets(cfg)
        tokenizer = self._tokenizer(cfg)
        datasets: dict[str, dict[str, Any]] = {}
        for name, by_split in corpora.items():
            for split, corpus in by_split.items():
                if not isinstance(corpus, ConversationCorpus):
                    raise ConfigError(
                        f"run.task conversation_sft trains on conversation files "
                        f"(datasets.conversations); datasets.{name} is a "
                        f"{type(corpus).__name__}"
                    )
                datasets.setdefault(name, {})[split] = corpus.tokenize(tokenizer)
        return datasets

    def train_step(self, model: nn.Module, samples: dict) -> dict[str, Any]:
        batch = sft_batch(samples, unwrap(model).llama_tokenizer.pad_token_id)
        self._count(samples)
        out = model(batch)
        return {"loss": out["loss"]}

    def _count(self, samples: dict) -> None:
        """Log, at the end of each epoch of iterations, the truncated conversations it held."""
        self._calls += 1
        self._rows += len(samples["input_ids"])
        self._truncated += sum(int(t) for t in samples.get("truncated") or [])
        if self._calls % int(self.cfg.run_cfg.iters_per_epoch) == 0:
            log.info(
                "conversation_sft: %d conversation(s) truncated to max_length in the %d rows "
                "of the last %d iterations",
                self._truncated,
                self._rows,
                self.cfg.run_cfg.iters_per_epoch,
            )
            self._rows = self._truncated = 0
