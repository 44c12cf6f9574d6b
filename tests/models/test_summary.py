"""The meta-device parameter summary and the shipped model configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xraygpt.cli.summary import main
from xraygpt.common.config import ConfigError
from xraygpt.models import llm
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.models.summary import load_model_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "xraygpt" / "configs" / "models"


def test_full_config_summary_on_the_meta_device(capsys):
    main(["--cfg-path", str(CONFIG_DIR / "minigpt4_vicuna.yaml")])
    summary = json.loads(capsys.readouterr().out)
    modules = summary["modules"]
    assert modules["visual_encoder"]["params_M"] == 985.9
    assert modules["visual_encoder"]["trainable"] == 0
    assert modules["llama_proj"]["params"] == 768 * 4096 + 4096
    assert summary["trainable"] == modules["llama_proj"]["trainable"]
    assert summary["trainable_M"] == 3.15
    assert modules["llama_model"]["params"] == 6_738_415_616  # LLaMA-7B
    assert modules["query_tokens"]["params"] == 32 * 768


@pytest.mark.parametrize("name", ["minigpt4_vicuna.yaml", "minigpt4_tiny.yaml"])
def test_shipped_model_configs_validate(name):
    cfg = load_model_config(CONFIG_DIR / name)
    assert cfg.arch == "mini_gpt4"
    assert cfg.model_type in MiniGPT4.PRETRAINED_MODEL_CONFIG_DICT
    assert MiniGPT4.PRETRAINED_MODEL_CONFIG_DICT[cfg.model_type] == f"configs/models/{name}"


def test_misspelt_model_key_fails(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  arch: mini_gpt4\n  model_type: tiny\n  freeze_vitt: true\n")
    with pytest.raises(ConfigError, match="freeze_vitt"):
        load_model_config(path)
    with pytest.raises(ConfigError, match="only model"):
        load_model_config(CONFIG_DIR / "minigpt4_tiny.yaml", ["run.seed=1"])


def test_llama_presets():
    assert llm.preset_config("llama-13b").hidden_size == 5120
    assert llm.preset_config("tiny", {"num_hidden_layers": 3}, vocab_size=4096).vocab_size == 4096
    with pytest.raises(ValueError, match="llama-70b"):
        llm.preset_config("llama-70b")
    with pytest.raises(ValueError, match="hidden_sise"):
        llm.preset_config("tiny", {"hidden_sise": 8})
