"""A small random mini_gpt4 for the Chat tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from xraygpt.models.mini_gpt4 import MiniGPT4


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every Chat test on one thread (tests/conftest.py says why)."""


@pytest.fixture
def chat_model(make_model: Callable[..., MiniGPT4]) -> MiniGPT4:
    return make_model(seed=0).eval()


@pytest.fixture
def xray() -> torch.Tensor:
    return torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
