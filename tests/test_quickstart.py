"""The README's first command: the phantom data, the three tiny stages and the evaluation.

Slow (minutes on a CPU): it runs ``quickstart.sh`` as a user would, into a
temporary folder, and checks what the issue asks of the tiny recipe on the
phantom test split.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xraygpt.common.config import REPO_ROOT
from xraygpt.tools.tiny_recipe import summarize


@pytest.mark.slow
def test_quickstart_trains_a_tiny_model_that_reads_the_image(tmp_path):
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).resolve() != venv_python.resolve():
        pytest.fail(f"run the tests with {venv_python}: quickstart.sh uses that environment")
    output, data = tmp_path / "output", tmp_path / "phantom"
    env = {**os.environ, "XRAYGPT_OUTPUT": str(output), "XRAYGPT_PHANTOM": str(data)}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "quickstart.sh")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "most_frequent" in result.stdout  # test.py's table has the baseline row
    assert "macro F1 (7 above)" in result.stdout  # and the per-finding summary follows

    summary = summarize(output, data)
    model = summary["scores"]["model"]
    baseline = summary["scores"]["most_frequent"]
    # The targets of the embedded default (clinical F1 over the drawn findings).
    assert model["macro_f1"] >= 0.50, summary["scores"]
    assert model["macro_f1"] >= baseline["macro_f1"] + 0.30, summary["scores"]
    assert model["rouge_l"] > baseline["rouge_l"], summary["scores"]
    # The model reads the image: with it, held-out reports cost less than the text alone.
    held = summary["held_out"]
    assert held["with_image"] < held["text_only_floor"] - 0.02, held
    assert held["with_another_image"] > held["with_image"] + 0.05, held  # not just more LM training

    # Idempotent: a second run reuses the data and the finished stages.
    again = subprocess.run(
        ["bash", str(REPO_ROOT / "quickstart.sh")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    assert "phantom data present" in again.stdout
    assert again.stdout.count("nothing to do") + again.stderr.count("nothing to do") == 3
