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


EVALUATE_RUN = {
    "config": "eval_configs/xraygpt_tiny_eval.yaml",
    "dataset": "openi",
    "split": "test",
    "ckpt": "output/xraygpt_tiny_stage4/checkpoint_last.pth",
    "generation": {"prompt": "Describe the given chest x-ray image in detail.", "num_beams": 1},
    "batch_size": 8,
}


def evaluate_output(folder: Path) -> tuple[Path, bytes, bytes]:
    """A folder as ``xraygpt evaluate`` (test.py) leaves it: predictions, metrics.json, picture."""
    folder.mkdir(parents=True, exist_ok=True)
    predictions = write(folder / "predictions.jsonl", LINES)
    metrics = {
        "n": 2,
        "nlg": {"ROUGE-1": 0.25},
        "skipped": {"baseline nearest_neighbour": "needs image folders (data_type: images)"},
        "skipped_images": {"count": 1, "image_ids": ["c"]},
        "run": EVALUATE_RUN,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "metrics.png").write_bytes(b"test.py's picture")
    return predictions, (folder / "metrics.json").read_bytes(), b"test.py's picture"


def test_rescoring_keeps_what_test_py_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "xraygpt_tiny_eval"
    predictions, metrics_json, picture = evaluate_output(job)
    argv = ["--predictions", str(predictions), "--no-java", "--bootstrap", "20"]
    for _ in range(2):  # and again: the rescoring replaces its own file, never test.py's
        assert run_main(main, argv) == 0
        assert (job / "metrics.json").read_bytes() == metrics_json
        assert (job / "metrics.png").read_bytes() == picture
        rescored = json.loads((job / "metrics_rescored.json").read_text())
        assert (job / "metrics_rescored.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        out = capsys.readouterr().out
        assert f"metrics written to {job / 'metrics_rescored.json'}" in out
        assert str(job / "metrics_rescored.png") in out
        assert f"{job / 'metrics.json'}" in out and "kept" in out
    # test.py's provenance travels with the new figures
    assert rescored["run"] == EVALUATE_RUN
    assert rescored["skipped_images"] == {"count": 1, "image_ids": ["c"]}
    assert rescored["skipped"]["baseline nearest_neighbour"].startswith("needs image folders")
    assert rescored["skipped"]["METEOR"] == "needs Java, which --no-java turned off"
    assert rescored["rescored"]["predictions"] == str(predictions)
    assert rescored["rescored"]["evaluation_metrics"] == str(job / "metrics.json")
    assert rescored["rescored"]["bootstrap"] == 20 and rescored["n"] == 2 and "ci" in rescored
    assert "images skipped (unreadable or too small): 1: c" in out


def test_rescoring_into_another_folder_carries_the_provenance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions, metrics_json, _ = evaluate_output(tmp_path / "job")
    out = tmp_path / "rescored"
    assert run_main(main, ["--predictions", str(predictions), "--out", str(out), "--no-java"]) == 0
    assert (tmp_path / "job" / "metrics.json").read_bytes() == metrics_json
    metrics = json.loads((out / "metrics.json").read_text())  # nothing there to keep
    assert metrics["run"] == EVALUATE_RUN and metrics["skipped_images"]["count"] == 1
    assert f"metrics written to {out / 'metrics.json'}" in capsys.readouterr().out


def test_a_metrics_json_it_cannot_read_is_kept_too(tmp_path: Path) -> None:
    predictions = write(tmp_path / "mine.jsonl", LINES)
    (tmp_path / "metrics.json").write_text("{not json")
    assert run_main(main, ["--predictions", str(predictions), "--no-java", "--bootstrap", "0"]) == 0
    assert (tmp_path / "metrics.json").read_text() == "{not json"
    metrics = json.loads((tmp_path / "metrics_rescored.json").read_text())
    assert metrics["run"] == {"predictions": str(predictions)}
    assert metrics["rescored"]["evaluation_metrics"] is None
