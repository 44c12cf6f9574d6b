"""The checkpoint key converters, on names alone (no model)."""

from __future__ import annotations

import pytest
import torch

from xraygpt.models import convert

# (LAVIS name, transformers Blip2QFormerModel name under the model's ``Qformer.``), docs/recipe.md §2
MAPPED = [
    ("Qformer.bert.embeddings.LayerNorm.weight", "Qformer.layernorm.weight"),
    (
        "Qformer.bert.encoder.layer.0.attention.self.query.weight",
        "Qformer.encoder.layer.0.attention.attention.query.weight",
    ),
    (
        "Qformer.bert.encoder.layer.0.attention.output.LayerNorm.bias",
        "Qformer.encoder.layer.0.attention.output.LayerNorm.bias",
    ),
    (
        "Qformer.bert.encoder.layer.10.crossattention.self.key.weight",
        "Qformer.encoder.layer.10.crossattention.attention.key.weight",
    ),
    (
        "Qformer.bert.encoder.layer.4.crossattention.output.dense.weight",
        "Qformer.encoder.layer.4.crossattention.output.dense.weight",
    ),
    (
        "Qformer.bert.encoder.layer.11.intermediate_query.dense.bias",
        "Qformer.encoder.layer.11.intermediate_query.dense.bias",
    ),
    (
        "Qformer.bert.encoder.layer.3.output_query.LayerNorm.weight",
        "Qformer.encoder.layer.3.output_query.LayerNorm.weight",
    ),
    ("query_tokens", "query_tokens"),
    ("llama_proj.weight", "llama_proj.weight"),
    ("visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.blocks.0.attn.qkv.weight"),
]
DROPPED = [
    "Qformer.bert.embeddings.word_embeddings.weight",
    "Qformer.bert.embeddings.position_embeddings.weight",
    "Qformer.bert.embeddings.position_ids",
    "Qformer.bert.encoder.layer.0.intermediate.dense.weight",
    "Qformer.bert.encoder.layer.7.output.dense.bias",
    "Qformer.bert.encoder.layer.7.output.LayerNorm.weight",
    "Qformer.cls.predictions.transform.dense.weight",
]


@pytest.mark.parametrize(("lavis", "ours"), MAPPED)
def test_original_names_map_to_ours_and_back(lavis, ours):
    assert convert.model_key_from_original(lavis) == ours
    if ours.startswith("Qformer."):
        inner = ours.removeprefix("Qformer.")
        assert "Qformer.bert." + convert.qformer_key_to_lavis(inner) == lavis


@pytest.mark.parametrize("lavis", DROPPED)
def test_text_side_keys_are_dropped(lavis):
    assert convert.model_key_from_original(lavis) is None


def test_convert_blip2_checkpoint_sorts_every_key():
    state = {name: torch.zeros(1) for name, _ in MAPPED[:8]}
    state.update({name: torch.zeros(1) for name in DROPPED})
    state.update({"ln_vision.weight": torch.ones(1), "vision_proj.weight": torch.zeros(1)})
    out = convert.convert_blip2_checkpoint(state)
    assert set(out.tensors) == {ours for _, ours in MAPPED[:8]} | {"ln_vision.weight"}
    assert sorted(out.dropped) == sorted(DROPPED)
    assert out.unused == ["vision_proj.weight"]


def test_strip_vit_prefix():
    bare = {"cls_token": torch.zeros(1), "blocks.0.norm1.weight": torch.zeros(1)}
    prefixed = {"visual_encoder." + k: v for k, v in bare.items()}
    assert convert.strip_vit_prefix(bare).keys() == bare.keys()
    assert convert.strip_vit_prefix(prefixed).keys() == bare.keys()
    with pytest.raises(ValueError, match="mixes"):
        convert.strip_vit_prefix({**prefixed, "llama_proj.weight": torch.zeros(1)})


def test_unwrap_checkpoint():
    sd = {"a": torch.zeros(1)}
    assert convert.unwrap_checkpoint({"model": sd, "epoch": 3}) == sd
    assert convert.unwrap_checkpoint(sd) == sd
    with pytest.raises(ValueError, match="not tensors"):
        convert.unwrap_checkpoint({"a": torch.zeros(1), "epoch": 3}, "x.pth")
