"""``xraygpt score``: score a predictions file without a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xraygpt.cli.score import main
from xraygpt.common.config import REPO_ROOT
from xraygpt.common.errors import DEBUG_ENV, MissingFileError, UsageError, run_main
from xraygpt.eval.metrics.scoring import PredictionsError

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
    assert run_main(main, ["--predictions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.jsonl:1: missing field(s) reference" in err
    assert "Traceback" not in err
    assert run_main(main, ["--predictions", str(tmp_path / "none.jsonl")]) == 2
    missing = f"error: predictions file not found: {tmp_path / 'none.jsonl'}"
    assert missing in capsys.readouterr().err
    good = write(tmp_path / "good.jsonl", LINES)
    assert run_main(main, ["--predictions", str(good), "--bootstrap", "-1"]) == 2
    assert "error: --bootstrap -1: must be >= 0 (0 = off)" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": "a", "generated": "x"}\n')
    with pytest.raises(PredictionsError, match="bad.jsonl:1: missing field"):
        run_main(main, ["--debug", "--predictions", str(bad)])
    with pytest.raises(MissingFileError, match="predictions file not found"):
        run_main(main, ["--predictions", str(tmp_path / "none.jsonl"), "--debug"])
    good = write(tmp_path / "good.jsonl", LINES)
    with pytest.raises(UsageError, match="--compare needs --bootstrap >= 1"):
        run_main(main, ["--predictions", str(good), "--compare", str(good), "--bootstrap", "0",
                        "--debug"])  # fmt: skip
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(UsageError, match="--bootstrap -2"):
        run_main(main, ["--predictions", str(good), "--bootstrap", "-2"])


def test_debug_traceback_through_the_command_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image_id": "a", "generated": "x"}\n')

    def score(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xraygpt", *argv],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    plain = score("score", "--predictions", str(bad))
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.splitlines()[0].startswith("error: ") and "bad.jsonl:1" in plain.stderr
    debug = score("--debug", "score", "--predictions", str(bad))
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "PredictionsError: " in debug.stderr and "bad.jsonl:1: missing field" in debug.stderr


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
