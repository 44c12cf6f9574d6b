"""``train.py`` as the user runs it: --help, a SIGKILL in mid-epoch then resume, torchrun.

The end-to-end runs use the real tiny ``mini_gpt4`` (only ``llama_proj`` trains,
as in XrayGPT) on a small phantom data set, on the CPU.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train.toy_jobs import run_job, subprocess_env, write_tiny_job
from xraygpt.common.config import REPO_ROOT
from xraygpt.common.io import load_checkpoint
from xraygpt.train.checkpoint import LAST_NAME


def train_cmd(cfg: Path, *options: str) -> list[str]:
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), "--cfg-path", str(cfg)]
    return cmd + (["--options", *options] if options else [])


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(40)


def write_config(tmp_path: Path, data: Path, iters: int) -> Path:
    cfg = tmp_path / "tiny_train.yaml"
    write_tiny_job(cfg, data, tmp_path / "out", iters)
    return cfg


def test_help_is_fast_and_imports_no_torch():
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['train.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('train.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - started
    assert "--cfg-path" in out.stdout and "--options" in out.stdout
    assert "torch imported: False" in out.stdout
    assert elapsed < 3.0, f"train.py --help took {elapsed:.1f} s"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, phantom):
    iters = 20  # 2 epochs x 20 iterations, a checkpoint every 2
    cfg = write_config(tmp_path, phantom, iters)
    full_dir, killed_dir = tmp_path / "out" / "full", tmp_path / "out" / "killed"
    run_job(train_cmd(cfg, "run.job_name=full"))

    proc = subprocess.Popen(
        train_cmd(cfg, "run.job_name=killed"),
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not (killed_dir / LAST_NAME).exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    at_kill = load_checkpoint(killed_dir / LAST_NAME)["step"]
    assert 0 < at_kill < iters, f"killed at iteration {at_kill}: not in the middle of epoch 0"
    print(f"SIGKILL after the checkpoint of iteration {at_kill} of {2 * iters}")

    run_job(train_cmd(cfg, "run.job_name=killed", "run.resume=auto"))
    full = load_checkpoint(full_dir / LAST_NAME)
    resumed = load_checkpoint(killed_dir / LAST_NAME)
    assert full["step"] == resumed["step"] == 2 * iters
    assert set(full["model"]) == {"llama_proj.weight", "llama_proj.bias"}
    for name, value in full["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for a, b in zip(
        full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # the resumed run dropped the killed run's log lines past the checkpoint, so each
    # step is logged once, with the same losses as the uninterrupted run
    full_log = {x["step"]: x["loss"] for x in map(json.loads, open(full_dir / "log.jsonl"))}
    resumed_log = [json.loads(x) for x in open(killed_dir / "log.jsonl")]
    assert [x["step"] for x in resumed_log] == sorted(full_log)
    for line in resumed_log:
        if line["step"] >= at_kill + 5:  # log lines wholly after the resume point
            assert line["loss"] == full_log[line["step"]], line["step"]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, phantom):
    iters = 8
    cfg = write_config(tmp_path, phantom, iters)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = run_job(cmd + train_cmd(cfg, "run.job_name=ddp")[1:])
    out = tmp_path / "out" / "ddp"
    ckpt = load_checkpoint(out / LAST_NAME)
    assert ckpt["step"] == 2 * iters and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    # the ranks had different RNG streams (seed + rank)
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    lines = [json.loads(x) for x in open(out / "log.jsonl")]
    assert [x["step"] for x in lines] == [5, 10, 15, 16]  # one writer: rank 0
    assert "distributed: rank 0 of 2 (gloo)" in done.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pth") == [
        "checkpoint_14.pth",
        "checkpoint_16.pth",
        LAST_NAME,
    ]
