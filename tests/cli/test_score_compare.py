"""``xraygpt score``: intervals, ``--compare`` and bad predictions files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.report_text import random_reports
from xraygpt.cli.score import main
from xraygpt.common.errors import run_main

REFS = random_reports(30, 0, most_sentences=3)


def write(path: Path, generated: list[str], refs: list[str] = REFS, prefix: str = "img") -> Path:
    lines = [
        {
            "image_id": f"{prefix}{i}",
            "generated": g,
            "reference": r,
            "baselines": {"most_frequent": "The lungs are clear."},
        }
        for i, (g, r) in enumerate(zip(generated, refs, strict=True))
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_main(main, [*argv, "--no-java"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_intervals_printed_and_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.jsonl", REFS[1:] + REFS[:1])
    code, out, _ = run(capsys, "--predictions", str(a), "--bootstrap", "100", "--variants")
    assert code == 0
    assert "ce5_uncertain1_macro_present" in out and "clinical_variant_definitions" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    low, high = metrics["ci"]["ROUGE-L"]
    assert f"{metrics['nlg']['ROUGE-L']:.3f} [{low:.3f}, {high:.3f}]" in out
    assert metrics["bootstrap"]["resamples"] == 100
    code, _, _ = run(capsys, "--predictions", str(a), "--bootstrap", "0")
    assert "ci" not in json.loads((tmp_path / "metrics.json").read_text())
    assert run(capsys, "--predictions", str(a), "--bootstrap", "-1")[0] == 2


def test_identical_files_differ_by_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.jsonl", REFS[1:] + REFS[:1])
    b = write(tmp_path / "b.jsonl", REFS[1:] + REFS[:1])
    code, out, _ = run(capsys, "--predictions", str(a), "--compare", str(b), "--bootstrap", "200")
    assert code == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["n_shared"] == 30
    for key, row in result["metrics"].items():
        assert (row["diff"], row["p"]) == (0.0, 1.0), key
    assert "ROUGE-L" in out and "+0.000 [+0.000, +0.000]" in out


def test_copying_references_beats_shuffled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = write(tmp_path / "copy.jsonl", REFS)
    # B: each image gets the reference of the next one
    shuffled = write(tmp_path / "shuf.jsonl", REFS[1:] + REFS[:1])
    code, out, _ = run(capsys, "--predictions", str(copy), "--compare", str(shuffled))
    assert code == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    for key in ("ROUGE-1", "ROUGE-L", "BLEU-4", "CIDEr", "ce14_uncertain0_micro"):
        assert result["metrics"][key]["diff"] > 0 and result["metrics"][key]["p"] < 0.01, key
    code, out, _ = run(
        capsys,
        "--predictions",
        str(copy),
        "--compare",
        "baseline:most_frequent",
        "--bootstrap",
        "50",
    )
    assert code == 0 and "baseline most_frequent" in out


def test_compare_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.jsonl", REFS)
    other_ids = write(tmp_path / "o.jsonl", REFS, prefix="other")
    code, _, err = run(capsys, "--predictions", str(a), "--compare", str(other_ids))
    assert code == 2 and "share no image_id" in err
    other_refs = write(tmp_path / "r.jsonl", REFS, refs=REFS[::-1])
    code, _, err = run(capsys, "--predictions", str(a), "--compare", str(other_refs))
    assert code == 2 and "different references" in err and "'img0'" in err
    code, _, err = run(capsys, "--predictions", str(a), "--compare", "baseline:nearest")
    assert code == 2 and "no baseline 'nearest'" in err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"image_id": "a", "generated": "x", "reference": "y"}', '{"image_id": "b"}'],
         "bad.jsonl:2: missing field(s) generated, reference"),
        (['{"image_id": "a", "generated": "x", "reference": "y"}', "",
          '{"image_id": "a", "generated": "z", "reference": "y"}'],
         "bad.jsonl:3: duplicate image_id 'a' (first on line 1)"),
        (['{"image_id": null, "generated": "x", "reference": "y"}'],
         "bad.jsonl:1: 'image_id' must be a string"),
        ([], "bad.jsonl: no predictions in the file"),
    ],
)  # fmt: skip
def test_bad_files_name_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(line + "\n" for line in lines))
    code, _, err = run(capsys, "--predictions", str(bad))
    assert code == 2 and message in err
    good = write(tmp_path / "good.jsonl", REFS)
    code, _, err = run(capsys, "--predictions", str(good), "--compare", str(bad))
    assert code == 2 and message in err
