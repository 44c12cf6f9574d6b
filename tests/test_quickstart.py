"""The README's first command: the phantom data, the four tiny stages and the evaluations.

Slow (minutes on a CPU): it runs ``quickstart.sh`` as a user would, into a
temporary folder, and checks what the issue asks of the tiny recipe on the
phantom test split.
"""

import subprocess

import pytest

from xraygpt.common.config import REPO_ROOT
from xraygpt.eval.recipe_summary import summarize


@pytest.mark.slow
def test_quickstart_trains_a_tiny_model_that_reads_the_image(quickstart_run):
    # quickstart.sh runs once per session (tests/conftest.py), into a temporary folder.
    output, data, env = quickstart_run.output, quickstart_run.data, quickstart_run.env
    result = quickstart_run.result
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

    # Conversations (chat_metrics.json, through Chat, held-out phrasings): the yes/no
    # answers follow the image, asked first (a) and after a report (b), and agree with
    # the model's own report; the always-"no" baseline is 0.50.
    assert "consistency (follow-up answer agrees" in result.stdout  # the chat table
    chat = summary["chat"]
    assert chat["first"]["always_no"]["macro_balanced_accuracy"] == 0.5, chat
    assert chat["first"]["macro_balanced_accuracy"] >= 0.85, chat
    assert chat["follow_up"]["macro_balanced_accuracy"] >= 0.85, chat
    assert chat["follow_up"]["consistency"] >= 0.90, chat
    assert model["macro_f1"] >= 0.80, summary["scores"]

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
    assert again.stdout.count("nothing to do") + again.stderr.count("nothing to do") == 4
