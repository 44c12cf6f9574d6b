"""Weight checks: the LLM folder, every checkpoint against the model (meta device)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.validate.helpers import (
    LLAMA_7B,
    LLAMA_13B,
    assert_fails,
    check,
    proj_ckpt,
    run,
    write_llm_folder,
)
from xraygpt.models.llm import TINY_TOKENIZER_DIR
from xraygpt.validate.checklist import PASS, SKIP, WARN, Checklist
from xraygpt.validate.weight_checks import check_llm_folder, read_safetensors_header


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


def test_the_meta_build_logs_nothing_so_nothing_is_silenced(full, caplog):
    """Built on the meta device, the model reports nothing a real build would load (here
    the preset LLM and the shipped tokenizer it falls back to), so the validator lets its
    logging be."""
    with caplog.at_level(logging.DEBUG, logger="xraygpt"):
        result = run(full["job"], "model.llama_model=''")
    assert check(result, "model build").status == PASS
    model_records = [r for r in caplog.records if r.name.startswith("xraygpt.models")]
    # not silenced: the build's report came through, at DEBUG
    assert any("mini_gpt4 built" in r.getMessage() for r in model_records)
    assert [r.getMessage() for r in model_records if r.levelno >= logging.INFO] == []
