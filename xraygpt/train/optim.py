"""The optimizer of the recipe and the numeric precision of a run."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xraygpt.common.config import ConfigError

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on trainable tensors with >= 2 dims, none on the rest.

    Decided by shape, not by name: matrices (and conv kernels, embeddings,
    query tokens) decay; biases, norm scales and other vectors do not.
    Frozen parameters (``requires_grad=False``) are left out altogether.
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ConfigError(
            "the model has no trainable parameters (all have requires_grad=False): set "
            "one of the model.freeze_* options to false, or add model.lora adapters"
        )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, run_cfg: Any) -> torch.optim.AdamW:
    groups = param_groups(model, run_cfg.weight_decay)
    n_decay = sum(p.numel() for p in groups[0]["params"])
    n_plain = sum(p.numel() for p in groups[1]["params"])
    log.info(
        "optimizer AdamW: %d trainable parameters (%d with weight decay %g, %d without)",
        n_decay + n_plain,
        n_decay,
        run_cfg.weight_decay,
        n_plain,
    )
    return torch.optim.AdamW(groups, lr=run_cfg.init_lr, betas=(run_cfg.beta1, run_cfg.beta2))


@dataclass
class Precision:
    """How the forward pass runs: an autocast dtype (or fp32) and an optional loss scaler."""

    device_type: str
    dtype: torch.dtype | None  # None: plain fp32
    scaler: torch.amp.GradScaler | None

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        if self.dtype is None:
            return "fp32"
        name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{name} autocast" + (" with a gradient scaler" if self.scaler else "")


def resolve_precision(device: torch.device, amp: bool, amp_dtype: str = "auto") -> Precision:
    """Pick the precision of a run from ``run.amp`` and ``run.amp_dtype``.

    On CUDA, ``amp`` means bf16 where the card supports it (no scaler needed:
    bf16 has fp32's range) and fp16 with a gradient scaler otherwise. On the
    CPU the run stays fp32 unless ``amp_dtype`` asks for bf16 or fp16
    explicitly, since CPU autocast is slow on most machines. ``amp_dtype`` is one of
    :data:`xraygpt.common.config.AMP_DTYPES`, checked when the config loads.
    """
    kind = device.type
    if not amp:
        return Precision(kind, None, None)
    if kind == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if amp_dtype == "bf16" and not bf16_ok:
            raise ConfigError(
                "run.amp_dtype=bf16 but this GPU does not support bf16; use auto or fp16"
            )
        if amp_dtype == "bf16" or (amp_dtype == "auto" and bf16_ok):
            return Precision(kind, torch.bfloat16, None)
        return Precision(kind, torch.float16, torch.amp.GradScaler("cuda"))
    if amp_dtype == "auto":
        return Precision(kind, None, None)
    if amp_dtype == "bf16":
        return Precision(kind, torch.bfloat16, None)
    return Precision(kind, torch.float16, torch.amp.GradScaler(kind))
