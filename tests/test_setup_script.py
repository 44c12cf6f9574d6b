"""setup_xraygpt_training.sh, run in a temporary copy of the repository.

``--skip-install`` and the project's own virtual environment keep it fast: the
script's own work (folders, phantom data, calling the validator, exit codes)
is what is under test, not pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xraygpt.common.config import REPO_ROOT

SCRIPT = "setup_xraygpt_training.sh"
VENV = Path(sys.executable).parent.parent  # the environment running the tests
LAYOUT = (
    "dataset/mimic/image",
    "dataset/openi/image",
    "vicuna_weights",
    "xraygpt/pretrained_ckpt",
    "output/xraygpt_mimic_pretrain",
    "output/xraygpt_openi_finetune",
)


def sh(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    return subprocess.run(
        ["bash", str(cwd / SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The files the script, the phantom generator and the validator need."""
    root = tmp_path_factory.mktemp("checkout")
    for name in (SCRIPT, "validate_training_setup.py", "requirements.txt"):
        shutil.copy2(REPO_ROOT / name, root / name)
    ignore = shutil.ignore_patterns("__pycache__", "pretrained_ckpt")
    for folder in ("xraygpt", "prompts", "train_configs"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=ignore)
    return root


def test_help_and_bad_options(checkout):
    result = sh(checkout, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ./setup_xraygpt_training.sh")
    for option in ("--venv", "--phantom", "--skip-install", "--cfg-path", "--no-venv"):
        assert option in result.stdout

    result = sh(checkout, "--frobnicate")
    assert result.returncode != 0 and "unknown option '--frobnicate'" in result.stderr
    result = sh(checkout, "--venv")
    assert result.returncode != 0 and "--venv needs a value" in result.stderr
    result = sh(checkout, "--phantom-n", "zero")
    assert result.returncode != 0 and "positive integer" in result.stderr


def test_missing_python_is_a_clear_error(checkout, tmp_path):
    result = sh(checkout, "--venv", str(tmp_path / "env"), "--python", "/no/such/python3.11")
    assert result.returncode != 0
    assert "'/no/such/python3.11' not found" in result.stderr
    assert not (tmp_path / "env").exists()


def test_layout_is_created_once(checkout):
    args = ("--skip-install", "--venv", str(VENV), "--no-validate")
    result = sh(checkout, *args)
    assert result.returncode == 0, result.stderr
    assert "reusing the environment" in result.stdout
    for folder in LAYOUT:
        assert (checkout / folder).is_dir(), folder
    created = [folder for folder in LAYOUT if f"created {folder}" in result.stdout]
    existing = [folder for folder in LAYOUT if f"folder {folder} exists" in result.stdout]
    assert sorted(created + existing) == sorted(LAYOUT)
    assert "validate later with:" in result.stdout
    assert "train_configs/xraygpt_mimic_pretrain.yaml" in result.stdout  # the default job

    again = sh(checkout, *args)
    assert again.returncode == 0, again.stderr
    for folder in LAYOUT:
        assert f"folder {folder} exists" in again.stdout


@pytest.mark.slow
def test_phantom_setup_validates_clean(checkout):
    """The whole path: phantom data drawn once, then the validator finds the job ready."""
    args = ("--skip-install", "--venv", str(VENV), "--phantom", "--phantom-n", "6")
    result = sh(checkout, *args)  # --phantom validates the tiny recipe's stage 1 by default
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train_configs/xraygpt_tiny_stage1.yaml" in result.stdout
    assert (checkout / "dataset/phantom/filter_cap.json").is_file()
    assert len(list((checkout / "dataset/phantom/image").glob("*.png"))) == 6
    assert "✓ phantom: annotations: dataset/phantom/filter_cap.json: 6 entries" in result.stdout
    assert "-> READY (exit 0)" in result.stdout
    assert "ready: train with" in result.stdout

    stamp = (checkout / "dataset/phantom/filter_cap.json").stat().st_mtime_ns
    again = sh(checkout, *args, "--no-validate")
    assert again.returncode == 0, again.stderr
    assert "phantom data exists" in again.stdout
    assert (checkout / "dataset/phantom/filter_cap.json").stat().st_mtime_ns == stamp


def test_validator_failure_is_the_exit_code(checkout):
    result = sh(
        checkout, "--skip-install", "--venv", str(VENV), "--cfg-path", "train_configs/absent.yaml"
    )
    assert result.returncode == 1
    assert "✗ config file: config file not found: train_configs/absent.yaml" in result.stdout
    assert "not ready: fix the items marked ✗" in result.stderr


def test_validator_arguments_pass_through(checkout):
    result = sh(
        checkout,
        "--skip-install",
        "--venv",
        str(VENV),
        "--cfg-path",
        "train_configs/absent.yaml",
        "--",
        "--json",
    )
    assert result.returncode == 1
    body = result.stdout[result.stdout.index("{") :]
    assert '"ok": false' in body and '"exit_code": 1' in body
