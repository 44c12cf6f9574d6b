"""Builders shared by the validator tests: stand-in LLM folders, checkpoints, checklists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from xraygpt.models.llm import LLAMA_PRESETS, TINY_TOKENIZER_DIR
from xraygpt.validate import validate_setup
from xraygpt.validate.checklist import FAIL, Checklist

# The released LLaMA-1 7B / 13B (Vicuna v1) config.json files: the library's presets hold
# their architecture (tests/models/test_model_summary.py pins the 7B's parameter count).
LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    **LLAMA_PRESETS["llama-7b"],
    "torch_dtype": "float16",
}
LLAMA_13B = {**LLAMA_7B, **LLAMA_PRESETS["llama-13b"]}
LLAMA_7B_PARAMS = 6_738_415_616

# Small stand-ins for EVA-ViT-g and the Q-Former, so that the checkpoints stay tiny.
SMALL_MODEL = {
    "arch": "mini_gpt4",
    "model_type": "pretrain_vicuna",
    "vit_model": "tiny",
    "vision_config": {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 32},
    "qformer_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "prompt_path": "prompts/alignment_chest_xray.txt",
    "prompt_template": "###Patient: {} ###Doctor: ",
    "max_txt_len": 160,
    "end_sym": "###",
}
QFORMER_WIDTH = 32


# --------------------------------------------------------------------------- builders


def write_llm_folder(folder: Path, config: dict = LLAMA_7B, shards: int = 2, layers=None) -> Path:
    """A Hugging Face LLaMA folder: config.json, tokenizer, sharded safetensors + index."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY_TOKENIZER_DIR / name, folder / name)
    layers = config["num_hidden_layers"] if layers is None else layers
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    names += [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(layers)]
    weight_map = {}
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        chunk = names[shard::shards]
        save_file({name: torch.zeros(1) for name in chunk}, str(folder / file))
        weight_map.update(dict.fromkeys(chunk, file))
    index = {"metadata": {"total_size": 4 * len(names)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def zeros_like_shapes(state: dict) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(v.shape, dtype=torch.float32) for k, v in state.items()}


def proj_ckpt(path: Path, hidden: int, width: int = QFORMER_WIDTH) -> Path:
    """A MiniGPT-4-format checkpoint: the trained llama_proj under ``model``."""
    state = {
        "llama_proj.weight": torch.zeros(hidden, width),
        "llama_proj.bias": torch.zeros(hidden),
    }
    torch.save({"model": state, "epoch": 1}, path)
    return path


def run(cfg: Path, *options: str, sample_images: int = -1, **kw) -> Checklist:
    return validate_setup(cfg, list(options), sample_images=sample_images, **kw)


def check(checklist: Checklist, name: str):
    found = [c for c in checklist.checks if c.name == name]
    assert found, f"no check {name!r}; checks: {[c.name for c in checklist.checks]}"
    return found[0]


def assert_fails(checklist: Checklist, name: str, *words: str):
    """``name`` failed, blocks the run, names ``words`` and comes with a fix."""
    item = check(checklist, name)
    assert item.status == FAIL, checklist.render()
    text = " ".join([item.message, *item.details])
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert item.fix, f"{name} failed without a fix"
    assert checklist.exit_code == 1
    rendered = checklist.render()
    assert f"✗ {name}: " in rendered and f"fix: {item.fix}" in rendered
    assert "NOT READY (exit 1)" in rendered
    return item
