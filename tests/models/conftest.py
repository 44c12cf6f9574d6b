"""Tiny ``mini_gpt4`` models for the model tests: random init, CPU, nothing downloaded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from xraygpt.models.mini_gpt4 import MiniGPT4

# Smaller than the shipped tiny config, so that every test builds its own model in ms.
SMALL: dict[str, Any] = {
    "image_size": 64,
    "vision_config": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 16},
    "num_query_token": 4,
    "qformer_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "llama_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Toy-sized matmuls gain nothing from threads, and lose much on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_model() -> Callable[..., MiniGPT4]:
    """``make_model(seed=0, **overrides)``: a small tiny-type model, seeded."""

    def make(seed: int = 0, **overrides: Any) -> MiniGPT4:
        torch.manual_seed(seed)
        cfg = MiniGPT4.default_config("tiny", _merge(SMALL, overrides))
        for key, value in overrides.items():
            if value == {}:  # a merge cannot empty a mapping; assignment can
                cfg[key] = {}
        return MiniGPT4.from_config(cfg)

    return make


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
