"""Kill-and-resume soak: ``train.py`` killed with SIGKILL again and again, resumed each
time with ``run.resume=auto``, ends exactly where an uninterrupted run ends.

The tiny ``mini_gpt4`` (``llama_proj`` trains) on a small phantom set, on the CPU.
The single-process soak forks ``train.py``'s ``main`` from this process (already
imported, so each start costs a second, not a Python start-up); the torchrun soak
starts real ``torchrun`` processes and kills one rank.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.train.toy_jobs import run_job, subprocess_env, torchrun, write_tiny_job
from xraygpt.common.config import REPO_ROOT
from xraygpt.common.io import load_checkpoint
from xraygpt.train.checkpoint import LAST_NAME

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_cpu_thread")]


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(40)


def _train_entry():
    spec = importlib.util.spec_from_file_location("xraygpt_train_entry", REPO_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(argv: list[str], log_file: str) -> None:
    """A forked training process: its output to ``log_file``, then ``train.py``'s main."""
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    torch.set_num_threads(1)
    os.chdir(REPO_ROOT)
    _train_entry().main(argv)


def _log_steps(path: Path) -> list[int]:
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError):
            pass  # a line being written
    return steps


def _wait_for_step(path: Path, step: int, alive, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not any(s >= step for s in _log_steps(path)):
        assert alive(), f"the run ended before iteration {step}"
        assert time.monotonic() < deadline, f"iteration {step} not reached in {timeout} s"
        time.sleep(0.01)


def _assert_same_end(full_dir: Path, other_dir: Path, total: int) -> None:
    full, other = load_checkpoint(full_dir / LAST_NAME), load_checkpoint(other_dir / LAST_NAME)
    assert full["step"] == other["step"] == total
    assert set(full["model"]) == {"llama_proj.weight", "llama_proj.bias"}
    for name, value in full["model"].items():
        assert torch.equal(other["model"][name], value), name
    for a, b in zip(
        full["optimizer"]["state"].values(), other["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    # log.jsonl holds every iteration once, with the uninterrupted run's losses
    full_log = [json.loads(x) for x in open(full_dir / "log.jsonl")]
    other_log = [json.loads(x) for x in open(other_dir / "log.jsonl")]
    assert [x["step"] for x in other_log] == [x["step"] for x in full_log]
    assert [x["loss"] for x in other_log] == [x["loss"] for x in full_log]


def test_five_sigkills_at_seeded_points_then_resume_match_an_uninterrupted_run(
    tmp_path, phantom, capsys
):
    iters = 12  # 2 epochs x 12 iterations, a checkpoint every 2, a log line every one
    total = 2 * iters
    cfg = tmp_path / "tiny.yaml"
    write_tiny_job(cfg, phantom, tmp_path / "out", iters, log_freq=1)
    argv = ["--cfg-path", str(cfg), "--options"]
    ctx = multiprocessing.get_context("fork")
    output = str(tmp_path / "train_output.txt")

    full = ctx.Process(target=_child, args=(argv + ["run.job_name=full"], output))
    full.start()
    full.join(timeout=300)
    assert full.exitcode == 0, Path(output).read_text()[-3000:]

    # Kill points 3 or 4 iterations apart, so that each lies past the previous
    # one's stale log lines: every kill interrupts a run that has made progress.
    rng = random.Random(19)
    points, at = [], 1
    for _ in range(5):
        at += rng.randint(3, 4)
        points.append(at)
    killed_dir = tmp_path / "out" / "killed"
    resumed_from = []
    for i, point in enumerate(points):
        options = ["run.job_name=killed"] + (["run.resume=auto"] if i else [])
        proc = ctx.Process(target=_child, args=(argv + options, output))
        proc.start()
        try:
            _wait_for_step(killed_dir / "log.jsonl", point, proc.is_alive)
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=60)
            assert proc.exitcode == -signal.SIGKILL
        finally:
            if proc.is_alive():
                proc.kill()
        resumed_from.append(load_checkpoint(killed_dir / LAST_NAME)["step"])
    assert resumed_from == sorted(resumed_from) and 0 < resumed_from[0] < resumed_from[-1] < total
    last = ctx.Process(
        target=_child, args=(argv + ["run.job_name=killed", "run.resume=auto"], output)
    )
    last.start()
    last.join(timeout=300)
    assert last.exitcode == 0, Path(output).read_text()[-3000:]
    assert not list(killed_dir.glob(".checkpoint_*.tmp"))  # a kill mid-write left nothing
    _assert_same_end(tmp_path / "out" / "full", killed_dir, total)
    with capsys.disabled():
        print(f"\nSIGKILL after log lines {points}; checkpoints then at {resumed_from}")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def test_torchrun_two_processes_one_rank_killed_then_resumed(tmp_path, phantom, capsys):
    iters = 6
    total = 2 * iters
    cfg = tmp_path / "tiny.yaml"
    write_tiny_job(cfg, phantom, tmp_path / "out", iters, log_freq=1)
    run_job(torchrun(cfg, 2, "run.job_name=full"), timeout=600)

    killed_dir = tmp_path / "out" / "killed"
    point = random.Random(19).randint(3, total - 4)
    agent = subprocess.Popen(
        torchrun(cfg, 2, "run.job_name=killed"),
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_step(killed_dir / "log.jsonl", point, lambda: agent.poll() is None, timeout=300)
        ranks = {_rank_of(pid): pid for pid in _children(agent.pid)}
        assert 1 in ranks, f"no rank 1 among torchrun's children {ranks}"
        os.kill(ranks[1], signal.SIGKILL)
        _, err = agent.communicate(timeout=180)
        # torchrun sees the rank die, stops the other one and fails
        assert agent.returncode != 0
        assert "SIGKILL" in err or "Signal 9" in err or "exitcode  : -9" in err, err[-2000:]
    finally:
        if agent.poll() is None:
            agent.kill()
    at_kill = load_checkpoint(killed_dir / LAST_NAME)["step"]
    assert 0 < at_kill < total

    run_job(torchrun(cfg, 2, "run.job_name=killed", "run.resume=auto"), timeout=600)
    _assert_same_end(tmp_path / "out" / "full", killed_dir, total)
    with capsys.disabled():
        print(f"\ntorchrun: rank 1 SIGKILLed after log line {point}; resumed from {at_kill}")
