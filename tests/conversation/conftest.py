"""A small random mini_gpt4 for the Chat tests."""

from __future__ import annotations

import pytest
import torch

from xraygpt.models.mini_gpt4 import MiniGPT4

SMALL = {
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


@pytest.fixture(autouse=True)
def one_thread():
    """Toy-sized matmuls gain nothing from threads, and lose much on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def chat_model() -> MiniGPT4:
    torch.manual_seed(0)
    return MiniGPT4.from_config(MiniGPT4.default_config("tiny", SMALL)).eval()


@pytest.fixture
def xray() -> torch.Tensor:
    return torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
