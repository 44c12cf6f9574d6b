"""FSDP2 full fine-tuning: sharding, sharded checkpoints, kill-and-resume under torchrun.

This torch (2.14) runs FSDP2 on the CPU with gloo, bf16 mixed precision and
activation checkpointing included, so the multi-process tests run two CPU
processes under torchrun.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.distributed as torch_dist
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.tiny_models import SMALL_MODEL_OVERRIDES
from xraygpt.common.config import ConfigError
from xraygpt.common.errors import MissingFileError
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.train import fsdp

# The tests' small mini_gpt4 (tests/tiny_models.py), with the whole LLM trained
FULL_FT = {
    **SMALL_MODEL_OVERRIDES,
    "freeze_vit": True,
    "freeze_qformer": True,
    "freeze_llm": False,
    "max_txt_len": 16,
}
CPU = torch.device("cpu")


def build(seed: int = 0) -> MiniGPT4:
    torch.manual_seed(seed)
    return MiniGPT4.from_config(MiniGPT4.default_config("tiny", FULL_FT))


def batch() -> dict:
    gen = torch.Generator().manual_seed(3)
    return {"image": torch.randn(2, 3, 64, 64, generator=gen), "caption": ["no effusion", "clear"]}


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """One thread (tests/conftest.py says why)."""


@pytest.fixture
def one_process_group(tmp_path):
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    yield
    torch_dist.destroy_process_group()


def test_fsdp_needs_a_process_group():
    with pytest.raises(ConfigError, match="launch with torchrun"):
        fsdp.shard_model(build(), CPU, ["LlamaDecoderLayer"])


def test_unknown_layer_class_lists_the_models_layers(one_process_group):
    with pytest.raises(ConfigError) as err:
        fsdp.shard_model(build(), CPU, ["DecoderLayer"])
    assert "LlamaDecoderLayer" in str(err.value) and "Blip2QFormerLayer" in str(err.value)


def step(model: MiniGPT4, optimizer: torch.optim.Optimizer) -> float:
    random.seed(0)  # the prompt drawn
    loss = model(batch())["loss"]
    loss.backward()
    fsdp.full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def test_shard_train_save_and_load_one_process(one_process_group, tmp_path):
    model = fsdp.shard_model(build(), CPU, ["LlamaDecoderLayer"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("llama_model.model.layers.") for n in trainable)
    assert not any(n.startswith(("visual_encoder.", "Qformer.")) for n in trainable)
    # layers gather in bf16; the root (llama_proj, embeddings, head) computes in fp32
    layer = model.llama_model.model.layers[0]
    assert layer._get_fsdp_state()._mp_policy.param_dtype == torch.bfloat16
    assert model.llama_model.is_activation_checkpointing
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = [step(model, optimizer) for _ in range(3)]
    assert losses[-1] < losses[0]
    path = fsdp.save_sharded(model, optimizer, {"step": 3}, tmp_path, step=3, keep_last=1)
    fsdp.save_sharded(model, optimizer, {"step": 4}, tmp_path, step=4, keep_last=1)
    assert fsdp.find_latest(tmp_path) == tmp_path / "checkpoint_4" and not path.exists()
    assert json.loads((tmp_path / fsdp.LAST_NAME).read_text()) == {
        "folder": "checkpoint_4",
        "step": 4,
    }
    # the folder holds trained tensors only: nothing frozen
    dcp_to_torch_save(tmp_path / "checkpoint_4", tmp_path / "plain.pth")
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    assert set(plain["model"]) == trainable

    # the same frozen parts (seed 0), the trained ones at their initial values
    other = fsdp.shard_model(build(), CPU, ["LlamaDecoderLayer"])
    other_opt = torch.optim.AdamW([p for p in other.parameters() if p.requires_grad], lr=1e-2)
    assert fsdp.load_sharded(other, other_opt, tmp_path / "checkpoint_4") == {"step": 4}
    # the same next step from the same state: weights and AdamW moments were restored
    assert step(other, other_opt) == step(model, optimizer)


def test_sharded_checkpoint_loads_into_a_plain_model(one_process_group, tmp_path):
    model = fsdp.shard_model(build(), CPU, ["LlamaDecoderLayer"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    step(model, optimizer)
    fsdp.save_sharded(model, optimizer, {"step": 1}, tmp_path, step=1, keep_last=0)
    expected = {n: p.full_tensor() for n, p in model.named_parameters() if p.requires_grad}
    torch_dist.destroy_process_group()  # what the exporter does: one process, no group
    try:
        plain = build(seed=9)
        fsdp.load_sharded(plain, None, tmp_path / "checkpoint_1")
        for name, value in expected.items():
            assert torch.equal(dict(plain.named_parameters())[name].detach(), value), name
    finally:
        torch_dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'pg2'}", rank=0, world_size=1
        )


def test_lora_adapters_shard_too_and_only_they_are_saved(one_process_group, tmp_path):
    torch.manual_seed(0)
    options = {**FULL_FT, "freeze_llm": True, "lora": {"r": 4, "dropout": 0.0}}
    model = MiniGPT4.from_config(MiniGPT4.default_config("tiny", options))
    model = fsdp.shard_model(model, CPU, ["LlamaDecoderLayer"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    step(model, optimizer)
    fsdp.save_sharded(model, optimizer, {"step": 1}, tmp_path, step=1, keep_last=0)
    dcp_to_torch_save(tmp_path / "checkpoint_1", tmp_path / "plain.pth")
    saved = set(torch.load(tmp_path / "plain.pth", weights_only=True)["model"])
    assert saved - {"llama_proj.weight", "llama_proj.bias"} == {
        n for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n
    }
    assert len(saved) == 2 + 8


def test_a_path_that_is_not_a_sharded_checkpoint_is_a_project_error(tmp_path):
    (tmp_path / "checkpoint_last.pth").write_bytes(b"")
    with pytest.raises(MissingFileError, match="not a sharded checkpoint folder.*run.fsdp"):
        fsdp.load_sharded(torch.nn.Linear(2, 2), None, tmp_path / "checkpoint_last.pth")
