"""Vision encoders: the registry contract, EVA-ViT-g's shape and key names."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from xraygpt.common.registry import registry
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.models.vision_encoders import build_vision_encoder


def _cfg(**overrides):
    return MiniGPT4.default_config("tiny", overrides)


def test_encoders_are_registered_by_name():
    names = set(registry.names("vision_encoder"))
    assert {"eva_clip_g", "tiny"} <= names


def test_tiny_encoder_follows_the_contract():
    encoder = build_vision_encoder(_cfg(image_size=64, vision_config={"patch_size": 16}))
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1 + 16, encoder.num_features)


def test_unknown_encoder_and_options_fail():
    with pytest.raises(KeyError, match="unknown vision_encoder 'eva_clip_x'"):
        build_vision_encoder(_cfg(vit_model="eva_clip_x"))
    with pytest.raises(ValueError, match="depht that vision encoder .tiny. does not take"):
        build_vision_encoder(_cfg(vision_config={"depht": 3}))
    with pytest.raises(ValueError, match="eva_clip_g"):
        build_vision_encoder(_cfg(vit_model="eva_clip_g", vision_config={"depth": 3}))


def test_eva_clip_g_matches_the_blip2_vit():
    cfg = MiniGPT4.default_config("pretrain_vicuna")
    cfg.vision_config = {}
    with torch.device("meta"):
        encoder = build_vision_encoder(cfg)
    assert encoder.num_features == 1408 and len(encoder.blocks) == 39
    assert sum(p.numel() for p in encoder.parameters()) == 985_894_528
    keys = set(encoder.state_dict())
    for key in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.q_bias",
        "blocks.0.attn.v_bias",
        "blocks.0.attn.proj.bias",
        "blocks.38.mlp.fc1.weight",
        "blocks.38.mlp.fc2.bias",
    ]:
        assert key in keys, key
    assert not any(k.endswith("k_bias") or k.startswith(("norm.", "head.")) for k in keys)
    assert encoder.state_dict()["blocks.0.mlp.fc1.weight"].shape == (6144, 1408)
    assert encoder.pos_embed.shape == (1, 257, 1408)


def test_pos_embed_is_resampled_for_another_image_size():
    small = build_vision_encoder(_cfg(image_size=64, vision_config={"patch_size": 16}))
    large = build_vision_encoder(_cfg(image_size=128, vision_config={"patch_size": 16}))
    state, dropped = large.adapt_state_dict(small.state_dict())
    assert dropped == [] and state["pos_embed"].shape == large.pos_embed.shape
    large.load_state_dict(state)


def test_grad_checkpointing_flag_reaches_the_encoder():
    cfg = OmegaConf.merge(_cfg(), {"use_grad_checkpoint": True})
    assert build_vision_encoder(cfg).grad_checkpointing
