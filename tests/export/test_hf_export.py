"""``xraygpt export hf``: a folder plain transformers loads, generating as the project does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tests.tiny_models import SMALL_MODEL_OVERRIDES
from xraygpt.cli.export import main as export_main
from xraygpt.common.config import REPO_ROOT, Config
from xraygpt.common.errors import UsageError
from xraygpt.conversation.chat import Chat
from xraygpt.conversation.templates import IMAGE_MESSAGE, get_conv_template
from xraygpt.export import hf as export_hf
from xraygpt.models import hf_blip2
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.processors.blip_processors import Blip2ImageEvalProcessor

# A model a little larger than tests/conftest.py's, so that answers depend on the image.
MODEL: dict[str, Any] = {
    "arch": "mini_gpt4",
    "model_type": "tiny",
    **SMALL_MODEL_OVERRIDES,
    "vision_config": {**SMALL_MODEL_OVERRIDES["vision_config"], "depth": 2},
    "llama_config": {
        **SMALL_MODEL_OVERRIDES["llama_config"],
        "hidden_size": 64,
        "intermediate_size": 128,
    },
}
IMAGE_SIZE = MODEL["image_size"]
MAX_NEW = 24
QUESTION = "Describe the given chest x-ray image in detail."


def job_config(**model: Any) -> Config:
    return Config(user_config={"model": {**MODEL, **model}, "run": {"max_new_tokens": MAX_NEW}})


def build(seed: int = 0, **model: Any) -> tuple[MiniGPT4, Config]:
    cfg = job_config(**model)
    torch.manual_seed(seed)
    built = MiniGPT4.from_config(cfg.model_cfg).eval()
    if not model.get("ckpt"):
        # Random weights barely let the image into the answer: scale up the Q-Former's
        # cross-attention (image -> queries) and the projection (queries -> LLM).
        with torch.no_grad():
            for name, param in built.Qformer.named_parameters():
                if (
                    ".crossattention.attention.value." in name
                    or ".crossattention.output.dense." in name
                ):
                    param.mul_(30)
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
    from xraygpt.common.errors import run_main

    rc = run_main(
        export_main,
        [
            "hf",
            "--cfg-path",
            "train_configs/xraygpt_tiny_stage3.yaml",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert rc == 2
    assert "model.vit_model='tiny_cnn'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_llm_subcommand_without_its_module_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setitem(
        sys.modules, "xraygpt.export.language_model", None
    )  # as if the file were absent
    assert export_main(["llm", "--cfg-path", "x.yaml", "--ckpt", "x.pth", "--out", "x"]) == 2
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


# ------------------------------------------------------------------ plain transformers

# Runs in a fresh interpreter outside the repository: transformers only.
STANDALONE = textwrap.dedent(
    """
    import json, sys
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, images, question, out = sys.argv[1:5]
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    result = {}
    for backend in ("pil", None):  # None: transformers' default (torchvision) backend
        kwargs = {} if backend is None else {"backend": backend}
        processor = AutoProcessor.from_pretrained(folder, **kwargs)
        answers, embeds, pixels = [], [], []
        for path in json.loads(images):
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = processor(images=Image.open(path).convert("RGB"), text=prompt, return_tensors="pt")
            with torch.no_grad():
                # Blip2 hands generation to its language model, whose defaults come from the
                # text config: the folder's generation_config.json is passed explicitly.
                ids = model.generate(
                    **inputs, generation_config=model.generation_config, tokenizer=processor.tokenizer
                )
                feats = model.get_image_features(pixel_values=inputs["pixel_values"])
            new = ids[0, inputs["input_ids"].shape[1]:]
            text = processor.decode(new, skip_special_tokens=True)
            answers.append(text.split("###")[0].split("Doctor:")[-1].strip())
            embeds.append(feats.pooler_output[0])
            pixels.append(inputs["pixel_values"][0])
        result[backend or "default"] = {
            "answers": answers, "embeds": torch.stack(embeds), "pixels": torch.stack(pixels)
        }
    # the one known inexactness: post_layernorm takes the blocks' eps; ln_vision has 1e-5
    model.vision_model.post_layernorm.eps = 1e-5
    with torch.no_grad():
        result["pil"]["embeds_eps_1e-5"] = model.get_image_features(
            pixel_values=result["pil"]["pixels"]
        ).pooler_output
    assert not [m for m in sys.modules if m.split(".")[0] == "xraygpt"]
    torch.save(result, out)
    """
)


def run_standalone(folder: Path, images: list[Path], out: Path) -> dict[str, Any]:
    script = out.parent / "standalone.py"
    script.write_text(STANDALONE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(folder),
            json.dumps([str(p) for p in images]),
            QUESTION,
            str(out),
        ],
        cwd=out.parent,  # not the repository: nothing of it is importable
        env=env,
        check=True,
        timeout=600,
    )
    return torch.load(out, weights_only=True)


def project_answers(
    model: MiniGPT4, images: list[Path]
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Chat's greedy answers to QUESTION about each image, the image embeddings and pixels."""
    processor = Blip2ImageEvalProcessor(image_size=IMAGE_SIZE)
    chat = Chat(model, processor)
    answers, embeds, pixels = [], [], []
    for path in images:
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(str(path), conv, img_list)
        chat.ask(QUESTION, conv)
        text, _ = chat.answer(conv, img_list, do_sample=False, max_new_tokens=MAX_NEW)
        answers.append(text)
        embeds.append(img_list[0][0])
        pixels.append(processor(Image.open(path).convert("RGB")))
    return answers, torch.stack(embeds), torch.stack(pixels)


@pytest.mark.slow
def test_plain_transformers_answers_as_the_project_on_30_phantoms(
    exported, make_phantom, tmp_path
) -> None:
    model, folder = exported
    images = sorted((make_phantom(30, size=80) / "image").glob("*.png"))
    assert len(images) == 30
    ours, our_embeds, our_pixels = project_answers(model, images)
    theirs = run_standalone(folder, images, tmp_path / "result.pt")
    pil = theirs["pil"]
    assert len(set(ours)) > 5, "the answers hardly depend on the image: the check is too weak"
    equal = sum(a == b for a, b in zip(ours, pil["answers"], strict=True))
    diff = (pil["embeds"] - our_embeds).abs().max().item()
    diff_eps = (pil["embeds_eps_1e-5"] - our_embeds).abs().max().item()
    scale = our_embeds.abs().max().item()  # the test model's embeddings are scaled up
    default_equal = sum(a == b for a, b in zip(ours, theirs["default"]["answers"], strict=True))
    default_pixels = (theirs["default"]["pixels"] - our_pixels).abs().max().item()
    print(
        f"\nequal answers {equal}/30 (PIL backend), {default_equal}/30 (default torchvision "
        f"backend, pixel max diff {default_pixels:.2e}); image embeddings max abs diff "
        f"{diff:.2e} (largest |embedding| {scale:.2e}, relative {diff / scale:.1e}), "
        f"{diff_eps:.2e} with post_layernorm eps 1e-5"
    )
    assert torch.equal(pil["pixels"], our_pixels)
    assert diff_eps < 1e-5  # all the difference is the post_layernorm eps ...
    assert diff / scale < 1e-2  # ... and it is small
    assert equal == 30, [(a, b) for a, b in zip(ours, pil["answers"], strict=True) if a != b]


def test_the_pipeline_answers(exported) -> None:
    from transformers import pipeline

    _, folder = exported
    pipe = pipeline("image-text-to-text", model=str(folder))
    image = Image.new("RGB", (80, 80), color=(90, 90, 90))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}],
        }
    ]
    gen = {"generation_config": pipe.model.generation_config, "tokenizer": pipe.processor.tokenizer}
    (out,) = pipe(text=messages, return_full_text=False, generate_kwargs=gen)
    assert isinstance(out["generated_text"], str) and out["generated_text"].strip()


def test_export_import_export_gives_identical_tensors(exported, tmp_path) -> None:
    model, folder = exported
    # a model with other random weights, then every weight from the folder
    again, cfg = build(seed=1, ckpt=str(folder))
    assert torch.equal(again.llama_proj.weight, model.llama_proj.weight)
    second = tmp_path / "again"
    export_hf.export_model(again, cfg, second, max_shard_size="200KB")  # sharded this time
    assert (second / hf_blip2.INDEX_FILE).is_file()
    first_tensors, second_tensors = tensors_of(folder), tensors_of(second)
    assert sorted(first_tensors) == sorted(second_tensors)
    for name, tensor in first_tensors.items():
        assert torch.equal(tensor, second_tensors[name]), name
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_a_folder_of_another_model_is_refused(exported) -> None:
    _, folder = exported
    with pytest.raises(ValueError, match="does not fit|shapes do not fit"):
        build(ckpt=str(folder), num_query_token=8)


def test_a_plain_folder_is_not_taken_for_an_export(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not one written by"):
        build(ckpt=str(tmp_path))


# ------------------------------------------------------------------ LoRA


def lora_model() -> MiniGPT4:
    from peft import LoraConfig, get_peft_model

    model, _ = build()
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model.llama_model = get_peft_model(model.llama_model, config)
    return model


def test_lora_is_merged_tensor_by_tensor_as_merge_and_unload() -> None:
    import copy

    model = lora_model()
    merged = copy.deepcopy(model.llama_model).merge_and_unload().state_dict()
    plain = hf_blip2.plain_llm_tensors(model.llama_model)
    assert sorted(plain) == sorted(merged)
    q = "model.layers.0.self_attn.q_proj.weight"
    base = model.llama_model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(plain[q](), base)  # the adapter changed it
    for name, tensor in merged.items():
        torch.testing.assert_close(plain[name](), tensor, rtol=0, atol=1e-6, msg=name)


def test_a_lora_model_exports_with_the_adapters_merged(tmp_path) -> None:
    import copy

    from transformers import Blip2ForConditionalGeneration

    model = lora_model()
    _, cfg = build()
    export_hf.export_model(model, cfg, tmp_path / "lora")
    loaded = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "lora")
    merged = copy.deepcopy(model.llama_model).merge_and_unload()
    name = "model.layers.1.self_attn.v_proj.weight"
    torch.testing.assert_close(
        loaded.language_model.state_dict()[name], merged.state_dict()[name], rtol=0, atol=1e-6
    )


def test_the_cli_exports_a_shipped_config(tmp_path, capsys) -> None:
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    out = tmp_path / "hf"
    argv = ["hf", "--cfg-path", "eval_configs/xraygpt_tiny_eva_eval.yaml", "--out", str(out)]
    options = ["model.ckpt=", "model.tokenizer=xraygpt/models/assets/tiny_tokenizer"]
    assert export_main([*argv, "--options", *options]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shards"] == 1 and report["tensors"] > 0
    model = Blip2ForConditionalGeneration.from_pretrained(out)
    assert model.config.num_query_tokens == 16 and model.config.vision_config.image_size == 96
    assert AutoProcessor.from_pretrained(out).image_processor.size == {"height": 96, "width": 96}
    from xraygpt.common.errors import run_main

    assert run_main(export_main, [*argv, "--options", *options]) == 2  # --out exists now
    assert "exists" in capsys.readouterr().err


def test_the_full_size_model_maps_onto_blip2_names_and_shapes() -> None:
    """EVA-ViT-g + BLIP-2 Q-Former + LLaMA-7B, on the meta device: every name and shape fits."""
    from transformers import Blip2ForConditionalGeneration

    model = MiniGPT4.from_config(MiniGPT4.default_config("pretrain_vicuna"), device="meta")
    config = hf_blip2.blip2_config(model, image_token_index=32000, vocab_rows=32001)
    assert config.vision_config.num_hidden_layers == 39
    assert config.vision_config.intermediate_size == 6144
    with torch.device("meta"):
        reference = Blip2ForConditionalGeneration(config).state_dict()
    tensors = hf_blip2.model_tensors(model)
    plan = hf_blip2.to_hf_plan(tensors, vocab_rows=32001)
    assert sorted(e.target for e in plan) == sorted(reference)
    for entry in plan:
        shape = entry.compute(lambda k: tensors[k]()).shape
        assert shape == reference[entry.target].shape, entry.target


# ------------------------------------------------------------------ --out: nothing lost


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path, capsys) -> None:
    """``xraygpt export hf ... --out <a training run> --overwrite`` once deleted the run."""
    from xraygpt.common.errors import run_main

    run = tmp_path / "xraygpt_tiny_eva"
    (run / "tb").mkdir(parents=True)
    (run / "checkpoint_last.pth").write_bytes(b"weights")
    (run / "log.jsonl").write_text('{"step": 1}\n')
    argv = ["hf", "--cfg-path", "eval_configs/xraygpt_tiny_eva_eval.yaml", "--out", str(run)]
    options = ["--options", "model.ckpt=", "model.tokenizer=xraygpt/models/assets/tiny_tokenizer"]
    assert run_main(export_main, [*argv, "--overwrite", *options]) == 2
    err = capsys.readouterr().err
    assert "is not an earlier export" in err and "checkpoint_last.pth" in err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_last.pth", "log.jsonl", "tb"]
    assert (run / "checkpoint_last.pth").read_bytes() == b"weights"


def test_overwrite_replaces_an_earlier_export_and_out_may_not_be_a_file(tmp_path, capsys):
    model, cfg = build()
    out = tmp_path / "hf"
    export_hf.export_model(model, cfg, out)
    (out / "stale.txt").write_text("from the first export")
    export_hf.export_model(model, cfg, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UsageError, match="is a file"):
        export_hf.export_model(model, cfg, a_file)
    assert a_file.read_text() == "mine"


def test_a_killed_exports_leftover_is_removed_and_folders_follow_the_umask(tmp_path, caplog):
    import logging
    import os

    model, cfg = build()
    out = tmp_path / "hf"
    leftover = tmp_path / ".hf.partial"  # what a SIGKILL in the middle of writing leaves
    leftover.mkdir()
    (leftover / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 1024)
    old = os.umask(0o022)
    try:
        with caplog.at_level(logging.INFO, logger="xraygpt.export"):
            export_hf.export_model(model, cfg, out)
    finally:
        os.umask(old)
    assert not leftover.exists()
    assert "did not finish" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert out.stat().st_mode & 0o777 == 0o755  # as the user's umask says, not 0700


def test_a_truncated_or_missing_shard_is_one_error_naming_it(exported, tmp_path) -> None:
    """``model.ckpt=<export folder>`` with a damaged shard: once a raw SafetensorError or
    FileNotFoundError traceback; now one project error naming the shard and the fix."""
    import shutil

    from xraygpt.common.errors import CheckpointError, MissingFileError

    model, _ = build()
    cfg = job_config()
    several = tmp_path / "sharded"
    export_hf.export_model(model, cfg, several, max_shard_size="200KB")
    shards = sorted(several.glob("model-*.safetensors"))
    assert len(shards) > 1
    truncated = tmp_path / "truncated"
    shutil.copytree(several, truncated)
    victim = truncated / shards[1].name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{victim.name}: the shard cannot be read"):
        build(ckpt=str(truncated))
    (several / shards[0].name).unlink()
    with pytest.raises(MissingFileError, match=rf"the shard {shards[0].name} is missing"):
        build(ckpt=str(several))
