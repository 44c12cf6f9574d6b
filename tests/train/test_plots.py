"""``xraygpt plot-run``: a picture from a run folder's log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xraygpt.cli.plot_run import main
from xraygpt.train.plots import read_log


def write_log(folder: Path, steps: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        {"step": s, "epoch": 0, "lr": 1e-3 / s, "loss": 5.0 / s, "grad_norm": None if s == 20 else 1.0,
         "bad_steps": 0, "samples_per_s": 40.0 + s, "bad_images": int(s == 30)}
        for s in steps
    ]  # fmt: skip
    (folder / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_writes_one_picture_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_log(tmp_path / "stage1", [10, 20, 30])
    b = write_log(tmp_path / "stage2", [5])
    assert main([str(a), str(b)]) == 0
    for folder in (a, b):
        data = (folder / "training_curves.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert str(a / "training_curves.png") in capsys.readouterr().out
    assert main([str(a), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_a_resumed_run_keeps_each_step_once(tmp_path: Path) -> None:
    folder = write_log(tmp_path / "run", [10, 20, 30])
    with (folder / "log.jsonl").open("a") as handle:  # resumed from the checkpoint at 20
        handle.write(json.dumps({"step": 30, "loss": 0.5}) + "\n")
        handle.write(json.dumps({"step": 40, "loss": 0.4}) + "\n")
    lines = read_log(folder)
    assert [line["step"] for line in lines] == [10, 20, 30, 40]
    assert lines[2]["loss"] == 0.5  # the resumed run's line wins


def test_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nothing")]) == 2
    assert "nothing/log.jsonl not found" in capsys.readouterr().err
    folder = write_log(tmp_path / "bad", [10])
    with (folder / "log.jsonl").open("a") as handle:
        handle.write("{oops\n")
    assert main([str(folder)]) == 2
    assert "bad/log.jsonl:2: not valid JSON" in capsys.readouterr().err
    (folder / "log.jsonl").write_text("")
    assert main([str(folder)]) == 2
    assert "no lines yet" in capsys.readouterr().err
