"""``xraygpt score``: score a predictions file without a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xraygpt.cli.score import main
from xraygpt.common.config import REPO_ROOT

LINES = [
    {
        "image_id": "a",
        "generated": "mild cardiomegaly no pleural effusion",
        "reference": "Mild cardiomegaly. No pleural effusion.",
        "baselines": {"most_frequent": "The lungs are clear."},
    },
    {
        "image_id": "b",
        "generated": "the lungs are clear",
        "reference": "The lungs are clear. No acute disease.",
        "baselines": {"most_frequent": "The lungs are clear."},
    },
]


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_scores_a_file_into_metrics_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions = write(tmp_path / "predictions.jsonl", LINES)
    assert (
        main(["--predictions", str(predictions), "--out", str(tmp_path / "out"), "--no-java"]) == 0
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["n"] == 2
    assert set(metrics) >= {"nlg", "clinical", "definition", "baselines", "skipped"}
    assert metrics["skipped"]["METEOR"] == "needs Java, which --no-java turned off"
    assert metrics["clinical"]["micro"]["f1"] == 1.0
    assert "most_frequent" in metrics["baselines"]
    out = capsys.readouterr().out
    assert "ROUGE-1" in out and str(tmp_path / "out" / "metrics.json") in out


def test_default_out_is_next_to_the_file(tmp_path: Path) -> None:
    predictions = write(
        tmp_path / "p.jsonl", [{k: v for k, v in LINES[1].items() if k != "baselines"}]
    )
    assert main(["--predictions", str(predictions), "--no-meteor"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["baselines"] == {}
    assert metrics["skipped"]["METEOR"].startswith("disabled")


def test_bad_file_exits_2_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": "a", "generated": "x"}\n')
    assert main(["--predictions", str(bad)]) == 2
    assert "bad.jsonl:1: missing field(s) reference" in capsys.readouterr().err
    assert main(["--predictions", str(tmp_path / "none.jsonl")]) == 2


def test_module_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xraygpt", "score", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0 and "--predictions" in proc.stdout
