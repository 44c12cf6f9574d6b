"""Training jobs run as real processes by the kill-and-resume tests: the tiny job's config,
the environment and the torchrun command line (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from xraygpt.common.config import REPO_ROOT


def write_tiny_job(
    path: Path,
    data: Path,
    out: Path,
    iters: int,
    log_freq: int = 5,
    model: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """The tiny mini_gpt4's job on an OpenI-layout folder, with ``model``/``run`` keys added.

    As it stands, the encoders and the LLM are frozen and llama_proj trains.
    """
    job = {
        "model": {
            "arch": "mini_gpt4",
            "model_type": "tiny",
            "image_size": 64,
            "freeze_vit": True,
            "freeze_qformer": True,
            "freeze_llm": True,
            "max_txt_len": 24,
            **(model or {}),
        },
        "datasets": {
            "openi": {
                "build_info": {"storage": str(data)},
                "vis_processor": {
                    "train": {"name": "blip2_image_train", "image_size": 64},
                    "eval": {"name": "blip2_image_eval", "image_size": 64},
                },
            }
        },
        "run": {
            "device": "cpu",
            "output_dir": str(out),
            "init_lr": 1.0e-3,
            "min_lr": 1.0e-4,
            "warmup_steps": 3,
            "max_epoch": 2,
            "iters_per_epoch": iters,
            "batch_size_train": 2,
            "num_workers": 0,
            "log_freq": log_freq,
            "save_every_iters": 2,
            "keep_last_checkpoints": 2,
            **(run or {}),
        },
    }
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def subprocess_env() -> dict[str, str]:
    """One thread per process: the machine's cores are shared by the ranks and other jobs."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}


def torchrun(cfg: Path, nproc: int, *options: str) -> list[str]:
    """``train.py`` on ``cfg`` under torchrun (standalone, ``nproc`` processes)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), str(REPO_ROOT / "train.py"), "--cfg-path", str(cfg)]
    return cmd + (["--options", *options] if options else [])


def run_job(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository; it must succeed (its output tail is the message)."""
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
