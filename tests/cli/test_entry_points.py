"""Every entry point answers the project's own errors with one clear message and a
non-zero exit, and shows the traceback only with --debug or XRAYGPT_DEBUG=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xraygpt.common.config import REPO_ROOT, ConfigError
from xraygpt.common.errors import (
    DEBUG_ENV,
    EXIT_ERROR,
    CheckpointError,
    MissingFileError,
    XrayGPTError,
    run_main,
)
from xraygpt.common.registry import RegistryError

BAD_KEY = "model: {arch: mini_gpt4, model_type: tiny, no_such_key: 1}\n"
BAD_TASK = "model: {arch: mini_gpt4, model_type: tiny}\nrun: {task: no_such_task}\n"


def _run(args: list[str], *, debug_env: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop(DEBUG_ENV, None)
    if debug_env:
        env[DEBUG_ENV] = "1"
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def bad_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_KEY)
    return path


def _assert_short_error(done: subprocess.CompletedProcess, *words: str) -> None:
    err = done.stderr
    assert done.returncode != 0, err
    assert "Traceback" not in err and "Traceback" not in done.stdout, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 4, err
    for word in words:
        assert word in err, err


# Each test below starts a Python process (a few seconds each, more on a busy machine).
@pytest.mark.parametrize(
    "script",
    [
        "train.py",
        pytest.param("test.py", marks=pytest.mark.slow),
        pytest.param("demo.py", marks=pytest.mark.slow),
    ],
)
def test_scripts_print_one_message_for_a_bad_config(script, bad_cfg):
    args = [script, "--cfg-path", str(bad_cfg)] + (
        ["--device", "cpu"] if script == "demo.py" else []
    )
    done = _run(args)
    _assert_short_error(done, "no_such_key")
    assert done.returncode == EXIT_ERROR


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(how, bad_cfg):
    args = ["train.py", "--cfg-path", str(bad_cfg)] + (["--debug"] if how == "flag" else [])
    done = _run(args, debug_env=how == "env")
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr
    assert "no_such_key" in done.stderr


@pytest.mark.slow
def test_train_py_names_an_unknown_registry_name(tmp_path):
    cfg = tmp_path / "bad_task.yaml"
    cfg.write_text(BAD_TASK)
    _assert_short_error(_run(["train.py", "--cfg-path", str(cfg)]), "no_such_task")


@pytest.mark.slow
def test_validator_reports_a_bad_config_without_a_traceback(bad_cfg):
    done = _run(["validate_training_setup.py", "--cfg-path", str(bad_cfg)])
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "no_such_key" in done.stdout


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("score", ["--predictions", "no/such.jsonl"], ["no/such.jsonl"]),
        ("shards", ["--storage", "no/such", "--out", "x"], ["no/such"]),
        ("recipe-summary", ["--output", "no/such"], ["no/such", "test.py"]),
        ("summary", ["--cfg-path", "BAD"], ["no_such_key"]),
        ("openi-agreement", ["--archive", "no/such.tgz"], ["no/such.tgz"]),
        ("prepare", ["openi", "--reports", "no/such", "--out", "x"], ["no/such"]),
        ("evaluate", ["--cfg-path", "BAD"], ["no_such_key"]),
        ("chat-eval", ["--cfg-path", "BAD"], ["no_such_key"]),
        ("export", ["hf", "--cfg-path", "BAD", "--out", "x"], ["no_such_key"]),
        ("conversations", ["loss", "--cfg-path", "BAD"], ["no_such_key"]),
    ],
)
@pytest.mark.slow
def test_every_command_prints_one_message(command, args, words, bad_cfg):
    args = [str(bad_cfg) if a == "BAD" else a for a in args]
    _assert_short_error(_run(["-m", "xraygpt", command, *args]), *words)


# ------------------------------------------------------------------ the wrapper itself


def test_run_main_reports_project_errors_and_strips_debug(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    seen: list[list[str]] = []

    def main(argv: list[str]) -> int:
        seen.append(argv)
        raise ConfigError("run.max_epoch=-1: must be >= 1")

    assert run_main(main, ["--cfg-path", "x.yaml"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: run.max_epoch=-1: must be >= 1\n") and "--debug" in err
    with pytest.raises(ConfigError):
        run_main(main, ["--cfg-path", "x.yaml", "--debug"])
    assert seen[-1] == ["--cfg-path", "x.yaml"]  # main never sees --debug
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        run_main(main, [])
    monkeypatch.setenv(DEBUG_ENV, "0")
    assert run_main(main, []) == EXIT_ERROR


def test_run_main_keeps_unexpected_errors_and_passes_the_status_on(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def broken(argv: list[str]) -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_main(broken, [])
    assert run_main(lambda argv: 3, []) == 3
    assert run_main(lambda argv: {"step": 10}, []) == 0  # train.py's stats


def test_the_project_errors_share_one_base_and_keep_their_builtin_types():
    from xraygpt.conversation.chat import ContextTooLongError
    from xraygpt.data.annotations import AnnotationError
    from xraygpt.data.caption_dataset import BadImageError
    from xraygpt.eval.metrics.scoring import PredictionsError

    for cls, builtin in [
        (ConfigError, ValueError),
        (RegistryError, KeyError),
        (MissingFileError, FileNotFoundError),
        (CheckpointError, RuntimeError),
        (AnnotationError, ValueError),
        (PredictionsError, ValueError),
        (BadImageError, RuntimeError),
        (ContextTooLongError, ValueError),
    ]:
        assert issubclass(cls, XrayGPTError) and issubclass(cls, builtin), cls
