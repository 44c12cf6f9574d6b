"""Predictions files, the metrics of a run with its baselines, and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.eval.metrics.sample_records import PRIOR, sample_records
from xraygpt.data.labeler import BINARY_DEFINITION
from xraygpt.eval.metrics import nlg
from xraygpt.eval.metrics.scoring import (
    PredictionsError,
    format_table,
    read_predictions,
    score_records,
    write_predictions,
)


def test_record_carries_both_label_sets() -> None:
    record = sample_records(3)[0]
    assert record["generated_labels"]["Cardiomegaly"] == 1
    assert record["reference_labels"]["Pleural Effusion"] == 1
    assert record["baselines"] == {"most_frequent": PRIOR}


def test_write_read_roundtrip(tmp_path: Path) -> None:
    path = write_predictions(sample_records(3), tmp_path / "sub" / "predictions.jsonl")
    assert path.read_text().count("\n") == 3
    back = read_predictions(path)
    assert back == json.loads(json.dumps(sample_records(3)))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"p.jsonl:2: not valid JSON"),
        ('["a list"]', r"p.jsonl:2: expected a JSON object"),
        ('{"image_id": "x", "generated": "a"}', r"p.jsonl:2: missing field\(s\) reference"),
        ('{"image_id": "x", "generated": 3, "reference": "b"}', r"'generated' must be a string"),
        ('{"image_id": "x", "generated": "a", "reference": "b", "baselines": ["c"]}', "baselines"),
    ],
)
def test_bad_predictions_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"image_id": "ok", "generated": "a", "reference": "b"}\n' + line + "\n")
    with pytest.raises(PredictionsError, match=message):
        read_predictions(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PredictionsError, match="no predictions"):
        read_predictions(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        read_predictions(tmp_path / "nowhere.jsonl")


def test_score_records_model_and_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlg, "java_status", lambda: "no java here")
    import xraygpt.eval.metrics.scoring as scoring

    monkeypatch.setattr(scoring, "java_status", lambda: "no java here")
    metrics = score_records(sample_records(3), run_info={"split": "test"})
    assert metrics["n"] == 3
    assert metrics["definition"] == BINARY_DEFINITION
    assert metrics["skipped"] == {"METEOR": "needs Java: no java here"}
    assert metrics["run"] == {"split": "test"}
    assert "pure-Python" in metrics["notes"]["tokenizer"]
    base = metrics["baselines"]["most_frequent"]
    assert "most frequent report" in base["description"]
    # the model states every reference finding; the prior states none of the two abnormal ones
    assert metrics["clinical"]["micro"]["f1"] == 1.0
    assert base["clinical"]["micro"]["f1"] < 1.0
    assert metrics["nlg"]["ROUGE-1"] > base["nlg"]["ROUGE-1"]
    assert list(metrics["nlg"]) == [
        "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4",
        "ROUGE-L (coco)", "CIDEr",
    ]  # fmt: skip
    table = format_table(metrics)
    assert "most_frequent" in table and "CE micro F1" in table
    assert "METEOR skipped: needs Java" in table
    json.dumps(metrics)  # serialisable as it stands


def test_baseline_missing_for_some_reports() -> None:
    recs = sample_records(3)
    del recs[1]["baselines"]
    with pytest.raises(PredictionsError, match="baseline 'most_frequent' is missing for 1"):
        score_records(recs, meteor=False, use_java=False)
