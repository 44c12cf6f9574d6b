"""``xraygpt export llm``: a trained LLM (LoRA merged) as a plain transformers folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from xraygpt.cli.export import main as export_main
from xraygpt.common.config import Config
from xraygpt.common.constants import EXPORT_INFO
from xraygpt.common.registry import registry
from xraygpt.models.llm import TINY_TOKENIZER_DIR, load_tokenizer, preset_config
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.train.checkpoint import trainable_state_dict

CAUSAL_LM_LORA = """\
model:
  arch: causal_lm
  model_type: tiny
  llama_model: {base}
  llama_preset: null
  tokenizer: ""
  lora: {r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj, down_proj]}
run:
  device: cpu
"""


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """One thread (tests/conftest.py says why)."""


def export(*argv: str) -> int:
    return export_main(["llm", *argv])


def greedy(model, tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture
def trained(tmp_path) -> tuple[Path, Path, object]:
    """A config, a runner-style checkpoint of 'trained' adapters, and the adapter model."""
    # the base the adapters train on: a small "Vicuna" folder
    torch.manual_seed(0)
    tokenizer = load_tokenizer(TINY_TOKENIZER_DIR)
    config = preset_config(
        "tiny",
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2},
        len(tokenizer),
    )
    base = tmp_path / "base"
    LlamaForCausalLM(config).save_pretrained(str(base))
    tokenizer.save_pretrained(str(base))
    cfg_path = tmp_path / "sft_lora.yaml"
    cfg_path.write_text(CAUSAL_LM_LORA.replace("{base}", str(base)))
    cfg = Config(str(cfg_path), [])
    model = registry.get_model_class("causal_lm").from_config(cfg.model_cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:  # peft starts B at zero; make the adapters matter
                param.add_(torch.randn_like(param) * (0.5 if "lora_B" in name else 0.0))
    ckpt = tmp_path / "checkpoint_last.pth"
    torch.save({"model": trainable_state_dict(model), "step": 3}, ckpt)
    return cfg_path, ckpt, model.eval()


def test_exported_folder_is_plain_transformers_and_generates_the_same(trained, tmp_path):
    cfg_path, ckpt, model = trained
    prompt = "The chest x-ray shows"
    expected = greedy(model.llama_model, model.llama_tokenizer, prompt)
    out = tmp_path / "radvicuna"
    assert export("--cfg-path", str(cfg_path), "--ckpt", str(ckpt), "--out", str(out)) == 0

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    assert not any("adapter" in n for n in names)  # merged: no peft files
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["lora_merged"] and info["dtype"] == "float32"

    plain = LlamaForCausalLM.from_pretrained(str(out), local_files_only=True).eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert greedy(plain, tokenizer, prompt) == expected
    # the adapters changed the answer: the merge carried them over
    base = LlamaForCausalLM.from_pretrained(str(tmp_path / "base"), local_files_only=True)
    assert greedy(base.eval(), tokenizer, prompt) != expected

    # the XrayGPT image stages take the folder as their LLM
    torch.manual_seed(0)
    stage = MiniGPT4.from_config(
        MiniGPT4.default_config(
            "tiny",
            {
                "image_size": 64,
                "vision_config": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 16},
                "num_query_token": 4,
                "qformer_config": {
                    "hidden_size": 32,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "intermediate_size": 64,
                },
                "llama_model": str(out),
                "llama_preset": None,
                "tokenizer": "",
                "freeze_llm": True,
            },
        )
    )
    assert stage.llm_pretrained
    for name, value in plain.state_dict().items():
        assert torch.equal(stage.llama_model.state_dict()[name], value), name


def test_export_refuses_a_non_empty_folder_and_a_foreign_checkpoint(trained, tmp_path):
    cfg_path, ckpt, _ = trained
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export("--cfg-path", str(cfg_path), "--ckpt", str(ckpt), "--out", str(busy))
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(ValueError, match="foreign.pth: its 'model' entry does not match"):
        export("--cfg-path", str(cfg_path), "--ckpt", str(foreign), "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_adapters_on_a_random_base_cannot_be_exported(tmp_path):
    cfg_path = tmp_path / "random_base.yaml"
    cfg_path.write_text(
        CAUSAL_LM_LORA.replace("llama_model: {base}", 'llama_model: ""').replace(
            "llama_preset: null", "llama_preset: tiny"
        )
    )
    ckpt = tmp_path / "c.pth"
    torch.save({"model": {}}, ckpt)
    with pytest.raises(ValueError, match="randomly initialised"):
        export("--cfg-path", str(cfg_path), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"))
