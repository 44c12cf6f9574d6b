"""``python -m xraygpt.export hf``: a folder plain transformers loads, generating as the project does."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from xraygpt.common.config import REPO_ROOT, Config
from xraygpt.conversation.chat import Chat
from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template
from xraygpt.export import hf as export_hf
from xraygpt.export.__main__ import main as export_main
from xraygpt.models import hf_blip2
from xraygpt.models.mini_gpt4 import MiniGPT4

IMAGE_SIZE = 64
# A model a little larger than tests/conftest.py's, so that answers depend on the image.
MODEL: dict[str, Any] = {
    "arch": "mini_gpt4",
    "model_type": "tiny",
    "image_size": IMAGE_SIZE,
    "vision_config": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 16},
    "num_query_token": 4,
    "qformer_config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "llama_config": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}
MAX_NEW = 24
QUESTION = "Describe the given chest x-ray image in detail."


def job_config(**model: Any) -> Config:
    return Config(user_config={"model": {**MODEL, **model}, "run": {"max_new_tokens": MAX_NEW}})


def build(seed: int = 0, **model: Any) -> tuple[MiniGPT4, Config]:
    cfg = job_config(**model)
    torch.manual_seed(seed)
    built = MiniGPT4.from_config(cfg.model_cfg).eval()
    with torch.no_grad():  # random weights: make the image count in the answer
        built.llama_proj.weight.mul_(20)
    return built, cfg


def tensors_of(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in hf_blip2.folder_weight_files(folder):
        with safe_open(str(folder / file), framework="pt") as handle:
            out.update({k: handle.get_tensor(k) for k in handle.keys()})
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MiniGPT4, Path]:
    model, cfg = build()
    out = tmp_path_factory.mktemp("hf") / "xraygpt_tiny"
    export_hf.export_model(model, cfg, out)
    return model, out


# ------------------------------------------------------------------ names and errors


def test_every_name_maps_back() -> None:
    model, _ = build()
    keys = list(hf_blip2.model_tensors(model))
    plan = hf_blip2.to_hf_plan(keys)
    back = hf_blip2.from_hf_plan([e.target for e in plan])
    assert sorted(e.target for e in back) == sorted(keys)
    assert "vision_model.post_layernorm.weight" in {e.target for e in plan}
    assert "language_projection.weight" in {e.target for e in plan}


def test_the_qkv_bias_is_q_zero_v_and_back() -> None:
    q, v = torch.randn(8), torch.randn(8)
    source = {"visual_encoder.blocks.0.attn.q_bias": q, "visual_encoder.blocks.0.attn.v_bias": v}
    (entry,) = hf_blip2.to_hf_plan(source)
    qkv = entry.compute(source.__getitem__)
    assert entry.target == "vision_model.encoder.layers.0.self_attn.qkv.bias"
    assert torch.equal(qkv, torch.cat([q, torch.zeros(8), v]))
    back = {
        e.target: e.compute({entry.target: qkv}.__getitem__)
        for e in hf_blip2.from_hf_plan([entry.target])
    }
    assert torch.equal(back["visual_encoder.blocks.0.attn.q_bias"], q)
    assert torch.equal(back["visual_encoder.blocks.0.attn.v_bias"], v)
    qkv[8] = 1.0  # a key bias Eva cannot hold
    with pytest.raises(ValueError, match="non-zero key bias"):
        hf_blip2.from_hf_plan([entry.target])[0].compute({entry.target: qkv}.__getitem__)


def test_the_tiny_cnn_encoder_is_refused_with_the_ones_that_export(tmp_path, capsys) -> None:
    cfg = Config(REPO_ROOT / "train_configs/xraygpt_tiny_stage3.yaml")
    with pytest.raises(export_hf.ExportError, match="tiny_cnn") as err:
        export_hf.check_exportable(cfg.model_cfg)
    assert "eva_clip_g, tiny" in str(err.value)
    rc = export_main(
        ["hf", "--cfg-path", "train_configs/xraygpt_tiny_stage3.yaml", "--out", str(tmp_path / "x")]
    )
    assert rc == 1
    assert "model.vit_model='tiny_cnn'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_llm_subcommand_without_its_module_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "xraygpt.export.llm", None)  # as if the file were absent
    assert export_main(["llm"]) == 2
    assert "not available" in capsys.readouterr().err


def test_an_existing_out_folder_is_not_replaced(tmp_path) -> None:
    model, cfg = build()
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(export_hf.ExportError, match="exists"):
        export_hf.export_model(model, cfg, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------ the conversation


def chat_prompt(steps: list[tuple[str, str]]) -> str:
    """The prompt Chat builds for ('image', _), ('ask', text), ('answer', text) steps."""
    conv = get_conv_template("xraygpt")
    chat = Chat(model=None)
    for kind, text in steps:
        if kind == "image":
            conv.append_message(conv.roles[0], IMAGE_MESSAGE)  # what upload_img appends
        elif kind == "ask":
            chat.ask(text, conv)
        else:
            conv.append_message(conv.roles[1], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def messages_of(steps: list[tuple[str, str]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for kind, text in steps:
        role = "assistant" if kind == "answer" else "user"
        part = {"type": "image"} if kind == "image" else {"type": "text", "text": text}
        if messages and messages[-1]["role"] == role == "user":
            messages[-1]["content"].append(part)
        else:
            messages.append({"role": role, "content": [part]})
    return messages


CONVERSATIONS = {
    "image and question": [("image", ""), ("ask", QUESTION)],
    "follow-up": [("image", ""), ("ask", QUESTION), ("answer", "No findings."), ("ask", "Why?")],
    "image alone": [("image", "")],
    "two images": [("image", ""), ("image", ""), ("ask", "Compare them.")],
    "text first": [("ask", "Hello."), ("image", ""), ("ask", QUESTION)],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_the_chat_template_gives_the_prompt_chat_builds(exported, name) -> None:
    from transformers import AutoProcessor

    model, folder = exported
    processor = AutoProcessor.from_pretrained(folder)
    steps = CONVERSATIONS[name]
    text = processor.apply_chat_template(messages_of(steps), add_generation_prompt=True)
    assert text.replace(hf_blip2.IMAGE_TOKEN, "<ImageHere>") == chat_prompt(steps)
    n_images = sum(kind == "image" for kind, _ in steps)
    ids = processor(images=[Image.new("RGB", (40, 30))] * n_images, text=text).input_ids[0]
    image_id = processor.tokenizer.convert_tokens_to_ids(hf_blip2.IMAGE_TOKEN)
    n_query = int(model.query_tokens.shape[1])
    assert ids == export_hf.project_prompt_ids(model, chat_prompt(steps), image_id, n_query)


def test_a_system_message_replaces_the_system_text(exported) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(exported[1])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "Be brief.###Patient: Hi.###Doctor:"


def test_the_folder_holds_configs_with_the_eval_settings(exported) -> None:
    model, folder = exported
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Blip2ForConditionalGeneration"]
    assert config["num_query_tokens"] == 4
    assert config["text_config"]["model_type"] == "llama"
    assert config["image_token_index"] == config["text_config"]["vocab_size"] - 1
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["stop_strings"] == ["###"] and gen["max_new_tokens"] == MAX_NEW
    assert gen["do_sample"] is False and gen["suppress_tokens"] == [config["image_token_index"]]
    proc = json.loads((folder / "processor_config.json").read_text())["image_processor"]
    assert proc["size"] == {"height": IMAGE_SIZE, "width": IMAGE_SIZE} and proc["resample"] == 3
