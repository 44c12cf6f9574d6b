"""LoRA through peft: settings, target checks, QLoRA's errors, mini_gpt4 with adapters."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from xraygpt.common.config import ConfigError
from xraygpt.common.errors import XrayGPTError
from xraygpt.models import lora
from xraygpt.models.lora import LoraSettings, apply_lora, linear_layer_names
from xraygpt.models.mini_gpt4 import MiniGPT4

LLAMA_LINEARS = [
    "down_proj",
    "gate_proj",
    "k_proj",
    "lm_head",
    "o_proj",
    "q_proj",
    "up_proj",
    "v_proj",
]
FROZEN_ENCODERS = {"freeze_vit": True, "freeze_qformer": True, "freeze_llm": True}
ADAPTERS = {**FROZEN_ENCODERS, "lora": {"r": 4, "dropout": 0.0}}


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
    )
    return LlamaForCausalLM(config)


def save_adapter_checkpoint(make_model, path):
    """A mini_gpt4 with adapters, its trainable weights moved off their start, saved to ``path``."""
    trained = make_model(**ADAPTERS)
    with torch.no_grad():
        for param in trained.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
    torch.save({"model": trained.trainable_state_dict(), "step": 1}, path)
    return trained


def test_settings_defaults_are_fastchats_recipe_and_unknown_keys_fail():
    settings = LoraSettings.from_mapping({})
    assert (settings.r, settings.alpha, settings.dropout) == (8, 16, 0.05)
    assert settings.target_modules == ["q_proj", "v_proj"] and not settings.quantize_4bit
    assert LoraSettings.from_mapping({"target_modules": "all-linear"}).target_modules == [
        "all-linear"
    ]
    with pytest.raises(ValueError, match=r"model.lora: unknown key\(s\) \['rank'\]"):
        LoraSettings.from_mapping({"rank": 4}, "model.lora")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraSettings(r=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: LoraSettings.from_mapping({"rank": 4}),
            r"model.lora: unknown key\(s\) \['rank'\]",
        ),
        (lambda: LoraSettings(r=0), r"model.lora.r=0: the adapter rank must be >= 1"),
        (lambda: LoraSettings(alpha=0), r"model.lora.alpha=0: .* must be > 0"),
        (lambda: LoraSettings(dropout=1.0), r"model.lora.dropout=1.0: must be in \[0, 1\)"),
        (lambda: LoraSettings(target_modules=[]), "model.lora.target_modules is empty"),
        (
            lambda: apply_lora(tiny_llama(), LoraSettings(target_modules=["qkv"])),
            r"model.lora.target_modules: \['qkv'\] are not linear layers",
        ),
    ],
)
def test_option_errors_are_project_errors_naming_the_key(make, message):
    with pytest.raises(ConfigError, match=message) as err:
        make()
    assert isinstance(err.value, XrayGPTError) and isinstance(err.value, ValueError)


def test_unknown_target_module_lists_the_models_linear_layers():
    model = tiny_llama()
    assert linear_layer_names(model) == LLAMA_LINEARS
    with pytest.raises(ValueError) as err:
        apply_lora(model, LoraSettings(target_modules=["q_proj", "qkv_proj"]))
    message = str(err.value)
    assert "['qkv_proj'] are not linear layers" in message
    assert str(LLAMA_LINEARS) in message


def test_adapters_train_and_the_base_stays_frozen():
    model = apply_lora(tiny_llama(), LoraSettings(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum("q_proj" in n for n in trainable) == 4  # A and B in each of 2 layers
    assert not any("k_proj" in n for n in trainable)
    ids = torch.randint(0, 64, (2, 6))
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    assert lora.is_lora_model(model)


def test_all_linear_leaves_the_output_head_alone():
    model = apply_lora(tiny_llama(), LoraSettings(target_modules=["all-linear"]))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters()}
    assert {"q_proj", "down_proj", "gate_proj"} <= adapted and "lm_head" not in adapted


def test_merged_model_computes_what_the_adapter_model_computes():
    model = apply_lora(tiny_llama(), LoraSettings(r=4, dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: make the adapters do something
                param.normal_(std=0.5)
    model.eval()
    ids = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        merged = lora.merged_copy(model)
        assert type(merged) is LlamaForCausalLM
        assert not any("lora" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_qlora_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = LoraSettings(quantize_4bit=True)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU; none is available"):
        lora.quantized_load_kwargs(settings)
    with pytest.raises(RuntimeError, match="lora.quantize_4bit=true .QLoRA."):
        apply_lora(tiny_llama(), settings)
    with pytest.raises(RuntimeError, match="model.lora.quantize_4bit=true .QLoRA.*CUDA"):
        MiniGPT4(
            MiniGPT4.default_config("tiny", {**FROZEN_ENCODERS, "lora": {"quantize_4bit": True}})
        )
    # a project error (one line from an entry point) that old `except RuntimeError` still catches
    with pytest.raises(lora.QLoraUnavailableError, match="Set model.lora.quantize_4bit=false"):
        lora.quantized_load_kwargs(settings)
    assert issubclass(lora.QLoraUnavailableError, ConfigError)


def test_qlora_without_bitsandbytes_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(RuntimeError, match="needs bitsandbytes, which is not installed"):
        lora.quantized_load_kwargs(LoraSettings(quantize_4bit=True))


def test_mini_gpt4_with_adapters_trains_llama_proj_and_the_adapters(make_model, images):
    model = make_model(**FROZEN_ENCODERS, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"llama_proj.weight", "llama_proj.bias"} <= trainable
    adapters = trainable - {"llama_proj.weight", "llama_proj.bias"}
    assert len(adapters) == 8 and all(".lora_" in n for n in adapters)
    model.train()
    assert model.llama_model.training and not model.visual_encoder.training  # LoRA dropout on
    loss = model({"image": images, "caption": ["a clear chest", "no effusion", "normal"]})["loss"]
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    # the checkpoint holds exactly what trains: nothing frozen
    assert set(model.trainable_state_dict()) == trainable


def test_mini_gpt4_lora_config_errors(make_model):
    from xraygpt.common.config import ConfigError

    with pytest.raises(ConfigError, match="freeze_llm=false"):  # one error line, exit 2
        make_model(freeze_llm=False, lora={})
    with pytest.raises(ValueError, match=r"model.lora.target_modules: \['query'\]"):
        make_model(**FROZEN_ENCODERS, lora={"target_modules": ["query"]})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["model.lora.target_modules=[qq_proj]"],
            r"model.lora.target_modules: \['qq_proj'\] are not linear layers of this model",
        ),
        (
            ["model.lora.quantize_4bit=true"],
            r"model.lora.quantize_4bit=true \(QLoRA\) .* needs a CUDA GPU; none is available",
        ),
        (["model.freeze_llm=false"], "model.lora is set with freeze_llm=false"),
    ],
    ids=["unknown target module", "QLoRA without CUDA", "LoRA with freeze_llm false"],
)
def test_xraygpt_train_reports_a_lora_option_error_in_one_line(
    small_model_overrides, caption_folder, tmp_path, capsys, monkeypatch, options, message
):
    """What ``xraygpt train --cfg-path <job>.yaml --options <option>`` prints (a CPU-only
    machine for QLoRA): one ``error:`` line, exit 2."""
    import yaml

    from xraygpt.cli.train import main
    from xraygpt.common.errors import run_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    job = {
        "model": {"arch": "mini_gpt4", "model_type": "tiny", **small_model_overrides, **ADAPTERS},
        "datasets": {"openi": {"build_info": {"storage": str(caption_folder)}}},
        "run": {"device": "cpu", "output_dir": str(tmp_path / "out"), "num_workers": 0},
    }
    cfg_path = tmp_path / "lora_job.yaml"
    cfg_path.write_text(yaml.safe_dump(job))
    assert run_main(main, ["--cfg-path", str(cfg_path), "--options", *options]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), lines
    assert not any(line.startswith("Traceback") for line in lines)
    assert not (tmp_path / "out").exists()  # stopped before the runner wrote anything


def test_mini_gpt4_adapter_checkpoint_loads_by_config(make_model, images, tmp_path):
    """What test.py and the demo do: build from the config, whose ``ckpt`` names the file."""
    path = tmp_path / "checkpoint_last.pth"
    trained = save_adapter_checkpoint(make_model, path)
    trained.eval()
    prompt = "<Img><ImageHere></Img> Describe the image."
    expected = trained.generate(images[:1], prompt, max_new_tokens=8)

    # the same seed: the same frozen parts and initial adapters; only the file differs
    fresh = make_model(**ADAPTERS).eval()
    assert fresh.generate(images[:1], prompt, max_new_tokens=8) != expected
    loaded = make_model(**ADAPTERS, ckpt=str(path)).eval()
    assert loaded.generate(images[:1], prompt, max_new_tokens=8) == expected
    for name, value in trained.trainable_state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


@pytest.mark.slow
def test_test_py_and_the_demo_load_an_adapter_checkpoint(
    make_model, small_model_overrides, make_phantom, tmp_path, monkeypatch
):
    import importlib.util
    import json

    import yaml

    from xraygpt.apps.demo.app import build_chat
    from xraygpt.common.config import REPO_ROOT, Config

    ckpt = tmp_path / "checkpoint_last.pth"
    trained = save_adapter_checkpoint(make_model, ckpt)
    phantom = make_phantom(20)
    job = {
        "model": {
            "arch": "mini_gpt4",
            "model_type": "tiny",
            **small_model_overrides,
            **ADAPTERS,
            "ckpt": str(ckpt),
        },
        "datasets": {
            "openi": {
                "build_info": {"storage": str(phantom)},
                "vis_processor": {"eval": {"name": "blip2_image_eval", "image_size": 64}},
            }
        },
        "run": {
            "device": "cpu",
            "output_dir": str(tmp_path / "out"),
            "batch_size_eval": 2,
            "max_new_tokens": 4,
            "num_workers": 0,
            "meteor": False,
        },
    }
    cfg_path = tmp_path / "lora_eval.yaml"
    cfg_path.write_text(yaml.safe_dump(job))
    monkeypatch.chdir(REPO_ROOT)

    chat = build_chat(Config(str(cfg_path), []), "cpu")
    for name, value in trained.trainable_state_dict().items():
        assert torch.equal(chat.model.state_dict()[name], value), name

    spec = importlib.util.spec_from_file_location("xraygpt_test_entry", REPO_ROOT / "test.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    entry.main(["--cfg-path", str(cfg_path), "--options", "run.max_samples=2"])
    lines = (tmp_path / "out" / "lora_eval" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("generated" in json.loads(x) for x in lines)


needs_qlora = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="QLoRA needs a CUDA device and bitsandbytes",
)


@pytest.mark.gpu
@needs_qlora
def test_qlora_on_cuda_trains_adapters_on_4bit_weights(tmp_path):
    base = tmp_path / "base"
    tiny_llama().save_pretrained(str(base))
    settings = LoraSettings(r=4, quantize_4bit=True)
    llm = LlamaForCausalLM.from_pretrained(
        str(base), dtype=torch.bfloat16, **lora.quantized_load_kwargs(settings)
    )
    model = apply_lora(llm, settings)
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    ids = torch.randint(0, 64, (2, 6), device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)
    with pytest.raises(ValueError, match="cannot merge LoRA adapters into 4-bit"):
        lora.merged_copy(model)
