"""Loading weights: EVA ViT files, LAVIS BLIP-2 Q-Former files, HF LLaMA folders, ``ckpt``."""

from __future__ import annotations

import logging

import pytest
import torch

from xraygpt.models import convert
from xraygpt.models.mini_gpt4 import MiniGPT4


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


def _lavis_blip2_state(model: MiniGPT4) -> dict[str, torch.Tensor]:
    """What a LAVIS BLIP-2 checkpoint of ``model`` holds, text-side parts and heads included."""
    state = convert.blip2_checkpoint_from_model(model.state_dict())
    hidden = model.Qformer.config.hidden_size
    for n in range(model.Qformer.config.num_hidden_layers):
        p = f"Qformer.bert.encoder.layer.{n}"
        state[f"{p}.intermediate.dense.weight"] = torch.randn(8, hidden)
        state[f"{p}.output.dense.weight"] = torch.randn(hidden, 8)
        state[f"{p}.output.LayerNorm.weight"] = torch.randn(hidden)
    state["Qformer.bert.embeddings.word_embeddings.weight"] = torch.randn(30523, hidden)
    state["Qformer.bert.embeddings.position_embeddings.weight"] = torch.randn(512, hidden)
    state["Qformer.bert.embeddings.position_ids"] = torch.arange(512)[None]
    state["Qformer.cls.predictions.bias"] = torch.randn(30523)
    state["vision_proj.weight"] = torch.randn(256, hidden)
    state["temp"] = torch.tensor(0.07)
    return state


def test_lavis_qformer_checkpoint_loads_completely_and_reproduces_outputs(
    make_model, images, tmp_path, caplog
):
    source = make_model(seed=1).eval()
    with torch.no_grad():  # LayerNorms start at 1 / 0: make them tell the models apart
        for name, param in source.named_parameters():
            if "layernorm" in name.lower() or name.startswith("ln_vision"):
                param.normal_()
    state = _lavis_blip2_state(source)
    # the names are LAVIS's (docs/recipe.md §2), not the HF ones
    assert "Qformer.bert.embeddings.LayerNorm.weight" in state
    assert "Qformer.bert.encoder.layer.0.attention.self.query.weight" in state
    assert "Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in state
    assert "Qformer.bert.encoder.layer.1.output_query.LayerNorm.bias" in state
    assert not any(".attention.attention." in k for k in state)
    path = _save({"model": state}, tmp_path / "blip2.pth")

    with caplog.at_level(logging.INFO):
        target = make_model(seed=2, q_former_model=path).eval()
    assert "vision_proj.weight" in caplog.text  # unused keys are reported
    for key, value in source.state_dict().items():
        if key.startswith(("Qformer.", "ln_vision.")) or key == "query_tokens":
            assert torch.equal(target.state_dict()[key], value), key

    def qformer_out(model: MiniGPT4, raw: torch.Tensor) -> torch.Tensor:
        query = model.query_tokens.expand(raw.shape[0], -1, -1)
        feats = model.ln_vision(raw)
        return model.Qformer(query_embeds=query, encoder_hidden_states=feats).last_hidden_state

    with torch.no_grad():
        raw = source.visual_encoder(images)  # the same ViT features into both
        want, got = qformer_out(source, raw), qformer_out(target, raw)
        fresh = qformer_out(make_model(seed=2).eval(), raw)
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(fresh, want, atol=1e-3)  # the check can fail


def test_lavis_checkpoint_missing_a_qformer_key_fails(make_model, tmp_path):
    state = _lavis_blip2_state(make_model(seed=1))
    del state["Qformer.bert.encoder.layer.0.crossattention.self.value.bias"]
    path = _save({"model": state}, tmp_path / "blip2.pth")
    with pytest.raises(ValueError, match=r"crossattention\.attention\.value\.bias"):
        make_model(q_former_model=path)


def _eva_file_state(model: MiniGPT4) -> dict[str, torch.Tensor]:
    """An eva_vit_g.pth-style dict: one block more than BLIP-2 uses, a final norm."""
    state = dict(model.visual_encoder.state_dict())
    depth = len(model.visual_encoder.blocks)
    for key, value in list(state.items()):
        if key.startswith("blocks.0."):
            state[key.replace("blocks.0.", f"blocks.{depth}.")] = torch.randn_like(value)
    width = model.visual_encoder.num_features
    state["norm.weight"], state["norm.bias"] = torch.ones(width), torch.zeros(width)
    return state


@pytest.mark.parametrize("prefix", ["", "visual_encoder."])
def test_eva_vit_file_loads_strictly(make_model, images, tmp_path, prefix):
    source = make_model(seed=1).eval()
    state = {prefix + k: v for k, v in _eva_file_state(source).items()}
    path = _save(state, tmp_path / "eva_vit_g.pth")
    target = make_model(seed=2, vit_ckpt=path).eval()
    with torch.no_grad():
        assert torch.equal(target.visual_encoder(images), source.visual_encoder(images))


def test_eva_vit_file_with_a_stray_or_missing_key_fails(make_model, tmp_path):
    source = make_model(seed=1)
    state = _eva_file_state(source)
    state["blocks.0.attn.k_bias_typo"] = torch.zeros(3)
    with pytest.raises(ValueError, match="1 unexpected key"):
        make_model(vit_ckpt=_save(state, tmp_path / "extra.pth"))
    state = _eva_file_state(source)
    del state["blocks.0.mlp.fc1.weight"]
    with pytest.raises(ValueError, match=r"1 missing key\(s\): blocks\.0\.mlp\.fc1\.weight"):
        make_model(vit_ckpt=_save(state, tmp_path / "missing.pth"))


def test_ckpt_list_loads_in_order_and_reports(make_model, tmp_path, caplog):
    source = make_model(seed=1)
    own = source.state_dict()
    vit = {k: v for k, v in own.items() if k.startswith("visual_encoder.")}
    llm = {k: v for k, v in own.items() if k.startswith("llama_model.")}
    proj_a = {k: torch.zeros_like(v) for k, v in own.items() if k.startswith("llama_proj.")}
    proj_b = {k: v for k, v in own.items() if k.startswith("llama_proj.")}
    paths = [
        _save({"model": {**vit, **proj_a}, "epoch": 1}, tmp_path / "stage0.pth"),
        _save({"model": {**llm, **proj_b}}, tmp_path / "stage1.pth"),
    ]
    with caplog.at_level(logging.INFO):
        target = make_model(seed=2, ckpt=paths)
    got = target.state_dict()
    for key in [*vit, *llm, *proj_b]:
        assert torch.equal(got[key], own[key]), key  # the later file wins for llama_proj
    assert not torch.equal(got["query_tokens"], own["query_tokens"])  # not in any file
    assert f"visual_encoder {len(vit)}/{len(vit)}" in caplog.text
    assert "llama_proj 2/2" in caplog.text


def test_ckpt_with_original_qformer_names_is_mapped(make_model, tmp_path):
    source = make_model(seed=1)
    state = convert.blip2_checkpoint_from_model(source.state_dict())
    target = make_model(seed=2, ckpt=_save({"model": state}, tmp_path / "orig.pth"))
    assert torch.equal(
        target.state_dict()["Qformer.encoder.layer.0.attention.attention.query.weight"],
        source.state_dict()["Qformer.encoder.layer.0.attention.attention.query.weight"],
    )


def test_ckpt_with_foreign_keys_or_nothing_fails(make_model, tmp_path):
    with pytest.raises(ValueError, match="does not have: classifier.weight"):
        make_model(ckpt=_save({"model": {"classifier.weight": torch.zeros(2)}}, tmp_path / "a.pth"))
    with pytest.raises(ValueError, match="holds no tensor"):
        make_model(ckpt=_save({"model": {}}, tmp_path / "b.pth"))


def test_llama_proj_of_another_llm_size_fails_clearly(make_model, tmp_path):
    wrong = {"llama_proj.weight": torch.zeros(5120, 32), "llama_proj.bias": torch.zeros(5120)}
    path = _save({"model": wrong}, tmp_path / "xraygpt_13b.pth")
    with pytest.raises(ValueError, match=r"llama_proj maps 32 -> 5120.*5120 = 13B"):
        make_model(ckpt=path)


@pytest.mark.parametrize(
    "key", ["vit_ckpt", "q_former_model", "ckpt", "prompt_path", "tokenizer", "llama_model"]
)
def test_missing_file_names_the_config_key(make_model, key):
    with pytest.raises(FileNotFoundError, match=f"model.{key}: .*no/such/thing"):
        make_model(**{key: "no/such/thing"})


def test_empty_llama_model_needs_a_preset(make_model):
    with pytest.raises(ValueError, match="llama_preset"):
        make_model(llama_preset=None)


def test_llm_and_tokenizer_load_from_a_hf_folder(make_model, images, tmp_path):
    source = make_model(seed=1).eval()
    folder = tmp_path / "vicuna"
    source.llama_model.save_pretrained(folder)
    source.llama_tokenizer.save_pretrained(folder)
    target = make_model(
        seed=2, llama_model=str(folder), llama_preset=None, llama_config={}, tokenizer=""
    )
    assert target.llm_source == str(folder)
    for key, value in source.llama_model.state_dict().items():
        assert torch.equal(target.llama_model.state_dict()[key], value), key
    assert target.llama_tokenizer.pad_token_id == target.llama_tokenizer.eos_token_id


def test_low_resource_without_cuda_is_a_clear_error(make_model, tmp_path, monkeypatch):
    source = make_model(seed=1)
    folder = tmp_path / "vicuna"
    source.llama_model.save_pretrained(folder)
    source.llama_tokenizer.save_pretrained(folder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="8-bit, which needs a CUDA GPU"):
        make_model(llama_model=str(folder), llama_preset=None, llama_config={}, low_resource=True)


def test_prompt_file_and_template_are_checked(make_model, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Describe the image.\n")
    with pytest.raises(ValueError, match="no line with <ImageHere>"):
        make_model(prompt_path=str(path))
    path.write_text("<Img><ImageHere></Img> Describe.\nno image here\n")
    assert make_model(prompt_path=str(path), prompt_template="").prompt_list == [
        "<Img><ImageHere></Img> Describe."
    ]
    with pytest.raises(ValueError, match="exactly one '{}'"):
        make_model(prompt_template="###Patient: ###Doctor: ")


def test_empty_or_truncated_ckpt_says_so(make_model, tmp_path):
    from xraygpt.common.errors import CheckpointError

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model.ckpt .*empty.pth is empty \(0 bytes\)"):
        make_model(ckpt=str(empty))
    _save({"model": {"llama_proj.bias": torch.zeros(64)}}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pth is truncated .*Download or copy it again"):
        make_model(ckpt=str(cut))


def _frozen_random_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "frozen but randomly initialised" in r.getMessage()]


def test_the_tiny_recipes_model_is_random_by_design_and_warns_of_nothing(make_phantom, caplog):
    """Everything frozen, nothing loaded (the tiny eval config without its checkpoints):
    random by design at toy size, so the report is INFO, and no record is a warning."""
    tokenizer = make_phantom(8) / "tokenizer"
    cfg = MiniGPT4.default_config("tiny_phantom", {"tokenizer": str(tokenizer)})
    assert cfg.freeze_vit and cfg.freeze_qformer and cfg.freeze_llm
    with caplog.at_level(logging.DEBUG):
        MiniGPT4.from_config(cfg)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (record,) = _frozen_random_records(caplog)
    assert record.levelno == logging.INFO and "ln_vision" in record.getMessage()


def test_a_full_size_model_with_a_frozen_random_part_warns(small_model_overrides, caplog):
    """pretrain_vicuna (at a small size) whose weight files were left out of the config."""
    from xraygpt.models.llm import TINY_TOKENIZER_DIR

    cfg = MiniGPT4.default_config(
        "pretrain_vicuna",
        {
            **small_model_overrides,
            "vit_model": "tiny",
            "vit_ckpt": "",
            "q_former_model": "",
            "llama_model": "",
            "llama_preset": "tiny",
            "tokenizer": str(TINY_TOKENIZER_DIR),
        },
    )
    with caplog.at_level(logging.INFO):
        MiniGPT4.from_config(cfg)
    (record,) = _frozen_random_records(caplog)
    assert record.levelno == logging.WARNING
    parts = record.getMessage().split(";")[0]
    assert parts.endswith("visual_encoder, ln_vision, Qformer, query_tokens, llama_model")
