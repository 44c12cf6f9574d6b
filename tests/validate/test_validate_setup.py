"""The whole validator (validate_training_setup.py): clean set-ups, the command line, the
shipped tiny recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import validate_training_setup
from tests.validate.helpers import (
    LLAMA_7B_PARAMS,
    QFORMER_WIDTH,
    assert_fails,
    check,
    run,
)
from xraygpt.common.config import REPO_ROOT
from xraygpt.validate import system_checks
from xraygpt.validate.checklist import FAIL, PASS, SKIP, WARN

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
    import importlib

    import xraygpt.components

    real_import = importlib.import_module

    def broken(name, *args, **kwargs):
        if name == "xraygpt.models.mini_gpt4":  # a component whose own import fails
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(xraygpt.components.importlib, "import_module", broken)
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
    # stage 2 also reads the phantom conversations written beside the images
    conversations = f"datasets.phantom_conversations.build_info.storage={phantom_data}"
    ckpts = []
    for stage, extra in zip(stages[:2], [(), (tokenizer, conversations)], strict=True):
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
