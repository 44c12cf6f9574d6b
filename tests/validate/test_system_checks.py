"""Hardware and software checks: GPUs, memory, disk, package versions."""

from __future__ import annotations

import argparse
import shutil

import torch

from tests.validate.helpers import (
    assert_fails,
    check,
    run,
)
from xraygpt.common.config import REPO_ROOT
from xraygpt.validate import system_checks
from xraygpt.validate.checklist import PASS, WARN, Checklist
from xraygpt.validate.system_checks import MemoryEstimate, check_hardware, check_software


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
