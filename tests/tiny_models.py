"""Model sizes shared by the tests (not a test module; fixtures in conftest.py use them)."""

from __future__ import annotations

from typing import Any

# A mini_gpt4 smaller than the shipped tiny config (64 px images), so that every test
# builds its own model in ms: overrides of ``MiniGPT4.default_config("tiny", ...)``.
SMALL_MODEL_OVERRIDES: dict[str, Any] = {
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
