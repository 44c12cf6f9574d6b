"""The set-up validator (validate_training_setup.py, xraygpt.tools.validate).

Each failure the issue names is produced in a temporary folder and must come
back as a ✗ with its fix: a missing folder, malformed JSON, a corrupt image, a
missing tokenizer, a shard index naming a missing file, a 13B ``llama_proj``
with a 7B LLM, a registry typo. Complete set-ups (the tiny model on phantom
data, and the full-size layout with a stand-in Vicuna folder) validate clean.

The stand-in Vicuna folder has the real 7B ``config.json`` and a real
tokenizer, but one-element tensors: the validator reads names, headers and
file sizes, never weights, and builds the model on the meta device.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import validate_training_setup
from xraygpt.common.config import REPO_ROOT
from xraygpt.models.convert import blip2_checkpoint_from_model
from xraygpt.models.llm import LLAMA_PRESETS, TINY_TOKENIZER_DIR
from xraygpt.models.mini_gpt4 import MiniGPT4
from xraygpt.tools.validate import system_checks, validate_setup
from xraygpt.tools.validate.checklist import FAIL, PASS, SKIP, WARN, Checklist
from xraygpt.tools.validate.system_checks import MemoryEstimate, check_hardware, check_software
from xraygpt.tools.validate.weight_checks import check_llm_folder, read_safetensors_header

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


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def phantom_data(make_phantom) -> Path:
    return make_phantom(10)


@pytest.fixture
def data_copy(phantom_data, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_data, tmp_path / "phantom_copy"))


@pytest.fixture(scope="module")
def tiny_job(phantom_data, tmp_path_factory) -> Path:
    """The tiny recipe: the tiny model on phantom data (96 px images)."""
    root = tmp_path_factory.mktemp("tiny")
    return write_yaml(
        root / "tiny.yaml",
        {
            "model": {"arch": "mini_gpt4", "model_type": "tiny", "image_size": 96},
            "datasets": {"phantom": {"build_info": {"storage": str(phantom_data)}}},
            "run": {"device": "cuda", "batch_size_train": 4, "output_dir": str(root / "output")},
        },
    )


@pytest.fixture(scope="module")
def full(phantom_data, tmp_path_factory) -> dict:
    """The full-size layout: Vicuna-7B folder, ViT / BLIP-2 / stage-1 checkpoints."""
    root = tmp_path_factory.mktemp("full")
    vicuna = write_llm_folder(root / "vicuna_weights")
    meta = MiniGPT4.from_config(
        MiniGPT4.default_config("pretrain_vicuna", {**SMALL_MODEL, "llama_model": str(vicuna)}),
        device="meta",
    )
    # Files in the original formats: visual_encoder.* names, LAVIS BLIP-2 names.
    vit = zeros_like_shapes(
        {f"visual_encoder.{k}": v for k, v in meta.visual_encoder.state_dict().items()}
    )
    torch.save(vit, root / "eva_vit_g.pth")
    # (only the Q-Former side: zeros for the whole meta state would be a 7B model)
    qformer_side = {
        k: v for k, v in meta.state_dict().items() if not k.startswith(("llama_", "visual_"))
    }
    blip2 = blip2_checkpoint_from_model(zeros_like_shapes(qformer_side))
    torch.save({"model": blip2}, root / "blip2.pth")
    proj_ckpt(root / "stage1.pth", 4096)
    model = {
        **SMALL_MODEL,
        "llama_model": str(vicuna),
        "vit_ckpt": str(root / "eva_vit_g.pth"),
        "q_former_model": str(root / "blip2.pth"),
        "ckpt": str(root / "stage1.pth"),
    }
    job = write_yaml(
        root / "stage2.yaml",
        {
            "model": model,
            "datasets": {"openi": {"build_info": {"storage": str(phantom_data)}}},
            "run": {"device": "cpu", "batch_size_train": 1, "output_dir": str(root / "output")},
        },
    )
    return {"root": root, "job": job, "vicuna": vicuna, "vit": vit, "blip2": blip2}


@pytest.fixture(scope="module")
def full_result(full) -> Checklist:
    return run(full["job"])


# --------------------------------------------------------------------------- clean set-ups


def test_tiny_phantom_setup_validates_clean(tiny_job):
    result = run(tiny_job)
    assert result.exit_code == 0, result.render()
    assert not [c for c in result.checks if c.status == FAIL]
    for name in (
        "config file",
        "registry names",
        "merge and schema",
        "phantom: storage",
        "phantom: annotations",
        "phantom: image files",
        "phantom: sample images",
        "model build",
        "llama_proj",
        "disk",
        "python",
        "training packages",
    ):
        assert check(result, name).status == PASS, result.render()
    assert "10 of 10 images decode (all)" in check(result, "phantom: sample images").message
    assert "train 8, val 1, test 1" in check(result, "phantom: annotations").message
    # run.device=cuda with a tiny model: without a GPU only a warning (the run falls back)
    cuda = check(result, "cuda")
    assert cuda.status == (PASS if torch.cuda.is_available() else WARN)
    assert result.render().endswith("-> READY (exit 0)")


def test_full_size_layout_validates_clean(full_result):
    result = full_result
    assert result.exit_code == 0, result.render()
    for name in (
        "llm folder",
        "llm config",
        "llm tokenizer",
        "llm weights",
        "model build",
        "vision weights",
        "q-former weights",
        "checkpoint model.ckpt",
        "llama_proj",
    ):
        assert check(result, name).status == PASS, result.render()
    assert "2 shard(s), all present" in check(result, "llm weights").message
    assert "[4096, 32]" in check(result, "llama_proj").message
    assert "7B" in check(result, "llama_proj").message
    # every weight path is set: no warning about frozen random modules
    assert not [c for c in result.checks if c.name == "frozen weights"]
    # run.device=cpu: no GPU checks
    assert check(result, "cuda").status == SKIP


def test_memory_estimate_follows_design_section_8(full_result):
    """fp16 weights: the 7B LLM 13.5 GB (docs/recipe.md §8); formula stated in the output."""
    est = full_result.facts["memory_estimate"]
    parts = {p["module"]: p for p in est["parts"]}
    assert parts["llama_model"]["params"] == LLAMA_7B_PARAMS
    assert parts["llama_model"]["bytes_per_param"] == 2
    assert not parts["llama_model"]["trained"] and parts["llama_proj"]["trained"]
    assert parts["llama_proj"]["params"] == 4096 * QFORMER_WIDTH + 4096
    assert 13.4e9 < est["weight_bytes"] < 13.6e9
    # 1 bos + 32 queries + the longest prompt + 160 text tokens
    assert est["seq_len"] > 1 + 32 + 160
    layers = 32 * est["seq_len"] * 4096 * 34 + est["seq_len"] * 32000 * 8
    assert est["activation_bytes_per_sample"] == layers
    assert est["total_bytes"] == (
        est["weight_bytes"] + est["trained_bytes"] + layers + system_checks.CUDA_OVERHEAD_BYTES
    )
    memory = check(full_result, "gpu memory")
    assert "estimate: frozen weights" in memory.details[0]
    assert "x 34 B" in memory.details[0]


# --------------------------------------------------------------------------- the failures


def test_missing_dataset_folder(tiny_job, tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run(tiny_job, f"datasets.phantom.build_info.storage={missing}")
    item = assert_fails(result, "phantom: storage", str(missing))
    assert "datasets.phantom.build_info.storage" in item.fix
    assert "python -m xraygpt.tools.phantom --out dataset/phantom" in item.fix
    assert check(result, "phantom: annotations").status == SKIP


def test_malformed_annotation_json(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    ann.write_text(ann.read_text()[:-40])  # cut off mid-file
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: annotations", "not valid JSON", str(ann), "line")
    assert "annotations" in item.fix


def test_annotation_schema_error_names_the_entry(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    data = json.loads(ann.read_text())
    del data["annotations"][3]["caption"]
    ann.write_text(json.dumps(data))
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    assert_fails(result, "phantom: annotations", "annotations[3]", "caption")


def test_corrupt_image_is_listed(tiny_job, data_copy):
    bad = data_copy / "image" / "phantom_00004.png"
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated download
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: sample images", "9 of 10", str(bad))
    assert len(item.details) == 1
    assert check(result, "phantom: image files").status == PASS


def test_dicom_images_are_sampled_through_the_dicom_reader(tiny_job, data_copy):
    import numpy as np
    from PIL import Image

    from xraygpt.processors.dicom import write_dicom

    for png in sorted((data_copy / "image").glob("*.png")):
        pixels = np.asarray(Image.open(png).convert("L")).astype(np.uint16) * 16  # 12 bits
        write_dicom(png.with_suffix(".dcm"), pixels, bits_stored=12, photometric="MONOCHROME2")
        png.unlink()
    bad = data_copy / "image" / "phantom_00004.dcm"
    bad.write_bytes(bad.read_bytes()[:-500])  # truncated pixel data
    result = run(
        tiny_job,
        f"datasets.phantom.build_info.storage={data_copy}",
        "datasets.phantom.image_ext=dcm",
    )
    assert check(result, "phantom: image files").status == PASS
    item = assert_fails(result, "phantom: sample images", "9 of 10", str(bad))
    assert len(item.details) == 1 and "pixel data cannot be decoded" in item.details[0]


def test_too_small_image_is_listed(tiny_job, data_copy):
    from PIL import Image

    small = data_copy / "image" / "phantom_00002.png"
    Image.new("L", (1, 1), 100).save(small)  # decodes fine, but is no radiograph
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: sample images", "9 of 10", ">= 32 px", str(small))
    assert "1x1 px" in item.details[0] and "min_image_size" in item.fix
    relaxed = run(
        tiny_job,
        f"datasets.phantom.build_info.storage={data_copy}",
        "datasets.phantom.min_image_size=0",
    )
    assert check(relaxed, "phantom: sample images").status == PASS


def test_missing_image_and_wrong_extension(tiny_job, data_copy):
    image = data_copy / "image" / "phantom_00002.png"
    image.rename(image.with_suffix(".jpg"))
    result = run(tiny_job, f"datasets.phantom.build_info.storage={data_copy}")
    item = assert_fails(result, "phantom: image files", "9 of 10", "phantom_00002.png")
    assert ".jpg" in item.fix and "image_ext" in item.fix


def test_split_the_run_needs_is_missing(tiny_job, data_copy):
    ann = data_copy / "filter_cap.json"
    data = json.loads(ann.read_text())
    for entry in data["annotations"]:
        entry["split"] = "train"
    ann.write_text(json.dumps(data))
    options = (f"datasets.phantom.build_info.storage={data_copy}", "run.valid_splits=[val]")
    result = run(tiny_job, *options)
    item = assert_fails(result, "phantom: annotations", "10 entries (train 10)", "split(s) val")
    assert "run.valid_splits" in item.fix


def test_missing_tokenizer(full, tmp_path):
    vicuna = Path(shutil.copytree(full["vicuna"], tmp_path / "vicuna"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (vicuna / name).unlink()
    result = run(full["job"], f"model.llama_model={vicuna}")
    item = assert_fails(result, "llm tokenizer", "no tokenizer", str(vicuna))
    assert "tokenizer.model" in item.fix
    # the rest is still checked: the model builds with a stand-in tokenizer
    assert check(result, "model build").status == PASS
    assert "tiny tokenizer" in check(result, "model build").message
    assert check(result, "llama_proj").status == PASS


def test_shard_index_names_a_missing_file(full, tmp_path):
    vicuna = Path(shutil.copytree(full["vicuna"], tmp_path / "vicuna"))
    (vicuna / "model-00002-of-00002.safetensors").unlink()
    result = run(full["job"], f"model.llama_model={vicuna}")
    item = assert_fails(result, "llm weights", "model-00002-of-00002.safetensors: missing")
    assert "shard" in item.fix


def test_13b_projection_with_a_7b_llm(full, tmp_path):
    ckpt = proj_ckpt(tmp_path / "minigpt4_13b.pth", 5120)
    result = run(full["job"], f"model.ckpt={ckpt}")
    item = assert_fails(result, "llama_proj", "[5120, 32]", "13B", "7B", "model.ckpt")
    assert "7B" in item.fix
    # the rest of the checkpoint is fine: only the projection is reported
    assert check(result, "checkpoint model.ckpt").status == PASS


def test_7b_projection_with_a_13b_llm_folder(full, tmp_path):
    vicuna = write_llm_folder(tmp_path / "vicuna13b", LLAMA_13B, shards=3)
    result = run(full["job"], f"model.llama_model={vicuna}")
    assert check(result, "llm weights").status == PASS
    assert_fails(result, "llama_proj", "[4096, 32]", "hidden 5120, a 13B")


def test_registry_typos_are_all_reported_with_suggestions(tiny_job):
    result = run(
        tiny_job,
        "model.arch=mini_gtp4",
        "run.lr_sched=linear_warmup_cosine",
        "datasets.phantom.vis_processor.train.name=blip2_image_trian",
    )
    item = assert_fails(result, "registry names", "3 unknown")
    text = "\n".join(item.details)
    assert "model.arch: unknown model 'mini_gtp4' (did you mean 'mini_gpt4'?)" in text
    assert "did you mean 'linear_warmup_cosine_lr'" in text
    assert "datasets.phantom.vis_processor.train.name" in text and "'blip2_image_train'" in text
    assert check(result, "merge and schema").status == SKIP
    assert check(result, "weights").status == SKIP  # the rest is blocked, not crashed


def test_unknown_model_type_and_dataset(tiny_job):
    result = run(tiny_job, "model.model_type=tiyn", "datasets.phantmo.build_info.storage=x")
    item = assert_fails(result, "registry names", "2 unknown")
    assert "did you mean 'tiny'" in "\n".join(item.details)
    assert "did you mean 'phantom'" in "\n".join(item.details)


def test_misspelt_config_key(tiny_job):
    result = run(tiny_job, "run.batch_size_trian=3")
    assert_fails(result, "merge and schema", "batch_size_trian")


def test_image_size_of_processors_and_model_differ(tiny_job):
    result = run(tiny_job, "model.image_size=128")
    item = assert_fails(result, "phantom: processors", "image_size=96 but model.image_size=128")
    assert "model.image_size" in item.fix


def test_missing_config_file(tmp_path):
    result = run(tmp_path / "nope.yaml")
    assert_fails(result, "config file", "not found")
    # software is still checked
    assert check(result, "python").status == PASS


# --------------------------------------------------------------------------- more weights


def test_malformed_llm_config_json(full, tmp_path):
    vicuna = Path(shutil.copytree(full["vicuna"], tmp_path / "vicuna"))
    (vicuna / "config.json").write_text('{"hidden_size": 4096,\n "num_hidden_layers": 32,,}')
    result = run(full["job"], f"model.llama_model={vicuna}")
    assert_fails(result, "llm config", "not valid JSON", "line 2")
    # the checkpoints are still checked, against the preset's architecture
    assert "preset llama-7b" in check(result, "model build").message
    assert check(result, "llama_proj").status == PASS


def test_llm_folder_units(tmp_path):
    # 13B config.json next to 7B weights (32 layers)
    folder = write_llm_folder(tmp_path / "mixed", LLAMA_13B, layers=32)
    out = Checklist("x")
    assert check_llm_folder(out, folder)["hidden_size"] == 5120
    assert_fails(out, "llm weights", "32 layers", "config.json says 40")

    # a truncated shard
    folder = write_llm_folder(tmp_path / "truncated")
    shard = folder / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-2])
    out = Checklist("x")
    check_llm_folder(out, folder)
    assert_fails(out, "llm weights", "truncated")
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors_header(shard)

    # no folder at all
    out = Checklist("x")
    assert check_llm_folder(out, tmp_path / "absent") is None
    assert_fails(out, "llm folder", "is not a folder")
    assert check(out, "llm tokenizer").status == SKIP

    # a tokenizer larger than the vocabulary
    folder = write_llm_folder(tmp_path / "small_vocab", {**LLAMA_7B, "vocab_size": 100})
    out = Checklist("x")
    check_llm_folder(out, folder)
    assert_fails(out, "llm tokenizer", "4096 tokens", "vocab_size is 100")

    # single-file weights
    folder = tmp_path / "single"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA_7B, "num_hidden_layers": 2}))
    shutil.copy(TINY_TOKENIZER_DIR / "tokenizer.json", folder)
    save_file(
        {"model.layers.1.mlp.up_proj.weight": torch.zeros(1)}, str(folder / "model.safetensors")
    )
    out = Checklist("x")
    check_llm_folder(out, folder)
    assert out.exit_code == 0 and check(out, "llm weights").message == "model.safetensors"


def test_vision_checkpoint_with_a_missing_key(full, tmp_path):
    vit = dict(full["vit"])
    del vit["visual_encoder.blocks.0.attn.qkv.weight"]
    torch.save(vit, tmp_path / "vit.pth")
    result = run(full["job"], f"model.vit_ckpt={tmp_path / 'vit.pth'}")
    assert_fails(result, "vision weights", "1 missing key(s): blocks.0.attn.qkv.weight")


def test_qformer_checkpoint_of_another_width(full, tmp_path):
    blip2 = dict(full["blip2"])
    key = "Qformer.bert.encoder.layer.0.attention.self.query.weight"
    blip2[key] = torch.zeros(64, 64)
    torch.save({"model": blip2}, tmp_path / "blip2.pth")
    result = run(full["job"], f"model.q_former_model={tmp_path / 'blip2.pth'}")
    assert_fails(
        result,
        "q-former weights",
        "Qformer.encoder.layer.0.attention.attention.query.weight: checkpoint [64, 64] vs model [32, 32]",
    )


def test_checkpoint_that_is_not_weights_only(full, tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, path)
    result = run(full["job"], f"model.ckpt={path}")
    assert_fails(result, "checkpoint model.ckpt", "weights_only=True")


def test_empty_and_truncated_checkpoints_say_so(full, tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    result = run(full["job"], f"model.ckpt={empty}")
    item = assert_fails(result, "checkpoint model.ckpt", "is empty (0 bytes)", str(empty))
    assert "EOFError" not in item.message
    whole = full["root"] / "stage1.pth"
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:-200])
    result = run(full["job"], f"model.ckpt={cut}")
    assert_fails(result, "checkpoint model.ckpt", "is truncated", "Download or copy it again")


def test_missing_stage1_checkpoint_names_the_job_that_writes_it(full, tmp_path):
    path = tmp_path / "output" / "xraygpt_mimic_pretrain" / "checkpoint_last.pth"
    result = run(full["job"], f"model.ckpt={path}")
    item = assert_fails(result, "checkpoint model.ckpt", "not found")
    assert "`python train.py --cfg-path train_configs/xraygpt_mimic_pretrain.yaml`" in item.fix

    path = tmp_path / "elsewhere" / "checkpoint_9.pth"
    result = run(full["job"], f"model.ckpt={path}")
    item = assert_fails(result, "checkpoint model.ckpt", "not found")
    assert "an earlier training job" in item.fix


def test_resume_checkpoint_without_optimizer(full, tmp_path):
    path = tmp_path / "checkpoint_10.pth"
    torch.save({"model": {}, "step": 10}, path)
    result = run(full["job"], f"run.resume_ckpt_path={path}")
    assert_fails(result, "resume checkpoint", "optimizer", "lr_sched")


def test_frozen_random_modules_warn_only(full):
    result = run(full["job"], "model.vit_ckpt=''", "model.q_former_model=''")
    item = check(result, "frozen weights")
    assert item.status == WARN and "visual_encoder" in item.message and "Qformer" in item.message
    assert result.exit_code == 0


# --------------------------------------------------------------------------- hardware


@pytest.fixture
def fake_gpus(monkeypatch):
    """``count`` visible GPUs with ``free`` bytes each."""

    def install(count: int, free: int, total: int = 80 * 1024**3):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (free, total))

    return install


def test_gpu_memory_and_count_against_the_estimate(full, fake_gpus, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    fake_gpus(count=2, free=8 * 1024**3)
    result = run(full["job"], "run.device=cuda", nproc_per_node=4)
    assert check(result, "cuda").status == PASS
    assert_fails(result, "gpu count", "2 GPU(s) visible, 4 process(es)")
    item = assert_fails(result, "gpu memory", "needs ~", "cuda:0 8.0 GiB free")
    assert "batch_size_train" in item.fix and item.details[0].startswith("estimate:")

    fake_gpus(count=4, free=40 * 1024**3)
    monkeypatch.setenv("WORLD_SIZE", "4")
    result = run(full["job"], "run.device=cuda")
    assert (
        check(result, "gpu count").status == PASS
        and "$WORLD_SIZE" in check(result, "gpu count").message
    )
    assert check(result, "gpu memory").status == PASS


def test_cuda_required_only_for_full_size(full, tiny_job, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = run(full["job"], "run.device=cuda")
    assert_fails(result, "cuda", "not available", "full-size")
    result = run(tiny_job)
    assert check(result, "cuda").status == WARN and result.exit_code == 0


def test_low_disk(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        system_checks.shutil, "disk_usage", lambda path: usage._replace(free=100 * 1024**2)
    )
    out = Checklist("x")
    run_cfg = argparse.Namespace(device="cpu", keep_last_checkpoints=2, max_epoch=1)
    check_hardware(out, run_cfg, None, tmp_path / "out" / "job", ckpt_bytes=10 * 1024**2)
    item = assert_fails(out, "disk", "100.0 MiB free", str(tmp_path))
    assert "run.output_dir" in item.fix


def test_estimate_formula_text():
    est = MemoryEstimate(
        parts=[("visual_encoder", 1000, 2, False), ("llama_proj", 10, 4, True)],
        llm_layers=2,
        llm_hidden=8,
        llm_vocab=16,
        seq_len=4,
        batch_size=3,
    )
    assert est.weight_bytes == 2000 and est.trained_bytes == 160
    assert est.activation_bytes_per_sample == 2 * 4 * 8 * 34 + 4 * 16 * 8
    assert "visual_encoder 1.0k x 2 B" in est.formula() and "batch 3" in est.formula()


# --------------------------------------------------------------------------- software


def test_package_versions_against_requirements(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# comment\ntorch==0.0.1\nnumpy>=1.0\ngradio==0.0.1\nnot-a-real-package-xyz==1.0\n"
        "--extra-index-url https://example.invalid\n"
    )
    out = Checklist("x")
    check_software(out, req)
    item = assert_fails(out, "training packages", "torch:", "requirements.txt wants ==0.0.1")
    assert "pip install -r requirements.txt" in item.fix
    other = check(out, "other packages")
    assert other.status == WARN and not other.required
    assert any("not-a-real-package-xyz: not installed" in d for d in other.details)
    assert any(d.startswith("gradio:") for d in other.details)


def test_project_requirements_are_satisfied():
    out = Checklist("x")
    check_software(out, REPO_ROOT / "requirements.txt")
    assert out.exit_code == 0, out.render()


# --------------------------------------------------------------------------- the command line


def test_cli_json_and_exit_code(tiny_job, tmp_path, capsys):
    code = validate_training_setup.main(
        ["--cfg-path", str(tiny_job), "--json", "--sample-images", "3"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["ok"] is True and data["exit_code"] == 0
    assert "3 of 3 images decode (a random sample of the 10)" in next(
        c["message"] for c in data["checks"] if c["name"] == "phantom: sample images"
    )
    assert data["facts"]["memory_estimate"]["total_bytes"] > 0

    missing = tmp_path / "gone"
    code = validate_training_setup.main(
        [
            "--cfg-path",
            str(tiny_job),
            "--json",
            "--options",
            f"datasets.phantom.build_info.storage={missing}",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["ok"] is False
    failed = [c for c in data["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["phantom: storage"]
    assert failed[0]["symbol"] == "✗" and failed[0]["fix"]


def test_help_imports_nothing_heavy():
    code = (
        "import sys, validate_training_setup as v\n"
        "assert 'torch' not in sys.modules and 'omegaconf' not in sys.modules, 'heavy import'\n"
        "v.main(['--help'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "--sample-images" in proc.stdout and "--json" in proc.stdout


def test_a_broken_component_module_is_reported(tiny_job, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "xraygpt.train":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    result = run(tiny_job)
    assert_fails(result, "registry names", "do not import", "bitsandbytes")
    assert check(result, "python").status == PASS


# --------------------------------------------------------------------------- the shipped tiny recipe


def _trained_state(cfg_path: Path, *options: str) -> dict[str, torch.Tensor]:
    """Zeros in the shape of what a job trains: the ``model`` entry of its checkpoint."""
    from xraygpt.common.config import Config
    from xraygpt.models.factory import build_model

    cfg = Config(cfg_path, list(options))
    model = build_model(cfg.model_cfg, device="meta")
    return {n: torch.zeros(p.shape) for n, p in model.named_parameters() if p.requires_grad}


def test_shipped_tiny_recipe_validates_clean(phantom_data, tmp_path):
    """Stages 1-3 of the tiny recipe on phantom data, stage 3 with stage 1 and 2 outputs."""
    stages = [REPO_ROOT / f"train_configs/xraygpt_tiny_stage{i}.yaml" for i in (1, 2, 3)]
    common = (
        f"datasets.phantom.build_info.storage={phantom_data}",
        f"run.output_dir={tmp_path}",
    )
    # stages 2-3 read the tokenizer that the phantom generator trains beside its data
    tokenizer = f"model.tokenizer={phantom_data / 'tokenizer'}"
    ckpts = []
    for stage, extra in zip(stages[:2], [(), (tokenizer,)], strict=True):
        result = run(stage, *common, *extra, sample_images=4)
        assert result.exit_code == 0, result.render()
        path = tmp_path / f"{stage.stem}.pth"
        torch.save({"model": _trained_state(stage, *extra), "step": 1}, path)
        ckpts.append(str(path))
    result = run(stages[2], *common, tokenizer, f"model.ckpt=[{','.join(ckpts)}]", sample_images=4)
    assert result.exit_code == 0, result.render()
    assert check(result, "checkpoint model.ckpt[0]").status == PASS
    assert "visual_encoder" in check(result, "checkpoint model.ckpt[0]").message
    assert "llama_model" in check(result, "checkpoint model.ckpt[1]").message
    # the stage-1 encoder comes from ckpt[0]: no warning about a frozen random encoder
    assert not [c for c in result.checks if c.name == "frozen weights"]
