"""The assistant-token loss of conversation data: what training (``conversation_sft``)
and evaluation (the held-out loss, :mod:`xraygpt.eval.conversation_loss`) both compute.

The loss is the mean cross-entropy over the assistant tokens (answers and the
separator ending each); every other token is context only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xraygpt.common.config import ConfigError
from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.data.caption_dataset import collate
from xraygpt.data.conversations import collate_tokens


def sft_batch(samples: dict[str, Any], pad_id: int) -> dict[str, torch.Tensor]:
    """The padded tensors of a collated batch of :class:`ConversationSFTDataset` items."""
    missing = [k for k in ("input_ids", "labels", "position_ids") if k not in samples]
    if missing:
        raise ConfigError(
            f"run.task conversation_sft got batches without {missing}: its datasets must be "
            f"conversation files (datasets.conversations)"
        )
    return collate_tokens(samples["input_ids"], samples["labels"], samples["position_ids"], pad_id)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP / FSDP wrappers keep the model in .module


@torch.no_grad()
def evaluate_answer_loss(model: nn.Module, dataset: Dataset, *, batch_size: int = 16) -> float:
    """Token-weighted mean cross-entropy (nats / token) over the assistant tokens of ``dataset``."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    total, tokens = 0.0, 0
    try:
        for samples in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            batch = {
                k: v.to(inner.device)
                for k, v in sft_batch(samples, inner.llama_tokenizer.pad_token_id).items()
            }
            # The loss is the mean over answer tokens, whose count HF takes after the shift.
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(inner(batch)["loss"]) * n
            tokens += n
    finally:
        inner.train(was_training)
    return total / tokens
