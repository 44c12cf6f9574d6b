"""The demo's defaults and its device choice (the flags are ``xraygpt demo``'s, :mod:`xraygpt.cli.demo`)."""

from __future__ import annotations

import logging
from typing import Any

from xraygpt.common.errors import UsageError
from xraygpt.common.generation import CHAT_GENERATION

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = CHAT_GENERATION.max_new_tokens  # the original demo's budget
MIB = 1024 * 1024


def resolve_device(gpu_id: int | None, device: str | None) -> Any:
    """``--device`` as given, else ``cuda:<gpu_id>``, else the CPU with a warning."""
    import torch

    if device:
        try:
            chosen = torch.device(device)
        except RuntimeError as err:
            raise UsageError(
                f"--device {device!r} is not a device name (try cpu or cuda:0)"
            ) from err
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        return chosen
    gpu_id = 0 if gpu_id is None else gpu_id
    if not torch.cuda.is_available():
        log.warning("CUDA is not available: running on the CPU (pass --device cpu to silence this)")
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not 0 <= gpu_id < count:
        raise UsageError(
            f"--gpu-id {gpu_id}: this machine has {count} CUDA device(s), numbered from 0"
        )
    return torch.device(f"cuda:{gpu_id}")
