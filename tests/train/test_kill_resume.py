"""torchrun x 2 on the CPU, killed with SIGKILL mid-run and resumed: the same trained weights.

Two ways of training the LLM: LoRA adapters under DDP (``model.lora``, ``.pth``
checkpoints of llama_proj + adapters) and full fine-tuning under FSDP2
(``run.fsdp``, sharded ``torch.distributed.checkpoint`` folders; this torch
runs FSDP2 on the CPU with gloo).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.tiny_models import SMALL_MODEL_OVERRIDES
from tests.train.toy_jobs import run_job, subprocess_env, torchrun, write_tiny_job
from xraygpt.common.config import REPO_ROOT
from xraygpt.common.io import load_checkpoint
from xraygpt.train import fsdp

# How the LLM trains (on the small test model): through adapters, or fully.
LORA = {
    "freeze_llm": True,
    "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
}
FULL = {"freeze_llm": False}
ITERS = 6


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """One thread (tests/conftest.py says why)."""


def run_and_kill(cmd: list[str], marker: Path) -> None:
    """Start ``cmd``; SIGKILL torchrun and its workers once ``marker`` exists."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the workers die with it
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def write_config(tmp_path: Path, data: Path, model: dict, run_extra: dict | None = None) -> Path:
    return write_tiny_job(
        tmp_path / "cfg.yaml",
        data,
        tmp_path / "out",
        ITERS,
        log_freq=2,
        model={**SMALL_MODEL_OVERRIDES, **model},
        run={"warmup_steps": 2, **(run_extra or {})},
    )


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(24)


@pytest.mark.slow
def test_lora_under_ddp_killed_and_resumed(tmp_path, phantom):
    cfg = write_config(tmp_path, phantom, LORA)
    full_dir, killed_dir = tmp_path / "out" / "full", tmp_path / "out" / "killed"
    run_job(torchrun(cfg, 2, "run.job_name=full"))
    run_and_kill(torchrun(cfg, 2, "run.job_name=killed"), killed_dir / "checkpoint_last.pth")
    at_kill = load_checkpoint(killed_dir / "checkpoint_last.pth")["step"]
    assert 0 < at_kill < 2 * ITERS
    run_job(torchrun(cfg, 2, "run.job_name=killed", "run.resume=auto"))

    full = load_checkpoint(full_dir / "checkpoint_last.pth")
    resumed = load_checkpoint(killed_dir / "checkpoint_last.pth")
    assert full["step"] == resumed["step"] == 2 * ITERS and full["world_size"] == 2
    # llama_proj and the adapters, nothing frozen
    adapters = [k for k in full["model"] if ".lora_" in k]
    assert set(full["model"]) - set(adapters) == {"llama_proj.weight", "llama_proj.bias"}
    assert len(adapters) == 8
    for name, value in full["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    assert any(v.abs().sum() > 0 for k, v in full["model"].items() if "lora_B" in k)


def consolidated(folder: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"{folder.parent.name}_{folder.name}.pth"
    dcp_to_torch_save(folder, out)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_fsdp_full_fine_tuning_killed_and_resumed_also_on_another_world_size(tmp_path, phantom):
    cfg = write_config(tmp_path, phantom, FULL, {"fsdp": True})
    full_dir, killed_dir = tmp_path / "out" / "full", tmp_path / "out" / "killed"
    run_job(torchrun(cfg, 2, "run.job_name=full"))
    run_and_kill(torchrun(cfg, 2, "run.job_name=killed"), killed_dir / fsdp.LAST_NAME)
    at_kill = load_checkpoint(fsdp.find_latest(killed_dir) / fsdp.META_NAME)["step"]
    assert 0 < at_kill < 2 * ITERS
    shutil.copytree(killed_dir, tmp_path / "out" / "one")  # to resume on 1 process
    run_job(torchrun(cfg, 2, "run.job_name=killed", "run.resume=auto"))

    full = consolidated(fsdp.find_latest(full_dir), tmp_path)
    resumed = consolidated(fsdp.find_latest(killed_dir), tmp_path)
    assert fsdp.find_latest(full_dir).name == f"checkpoint_{2 * ITERS}"
    assert fsdp.find_latest(killed_dir).name == f"checkpoint_{2 * ITERS}"
    assert any(k.startswith("llama_model.model.layers.") for k in full["model"])
    assert not any(k.startswith(("visual_encoder.", "Qformer.")) for k in full["model"])
    for name, value in full["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for key, value in full["optimizer"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed["optimizer"][key], value), key

    # the sharded folder exports to a plain transformers LLM holding the trained weights
    from xraygpt.export.language_model import load_trained_llm

    exported, _, info = load_trained_llm(cfg, fsdp.find_latest(full_dir), [])
    assert not info["lora_merged"]
    for name, value in exported.state_dict().items():
        assert torch.equal(value, full["model"][f"llama_model.{name}"]), name

    # the 2-process shards, resharded for 1 process: the run continues to the end
    run_job(torchrun(cfg, 1, "run.job_name=one", "run.resume=auto"))
    one_meta = load_checkpoint(fsdp.find_latest(tmp_path / "out" / "one") / fsdp.META_NAME)
    assert one_meta["step"] == 2 * ITERS and one_meta["world_size"] == 1
