"""The tiny recipe's summary: per-finding scores over the phantom observations, loss curve."""

import json

import pytest

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS, PHANTOM_OBSERVATIONS
from xraygpt.eval.recipe_summary import format_summary, loss_curve, phantom_scores, summarize


def _system(f1_of, rouge):
    per = {o: {"f1": f1_of.get(o, 0.0), "precision": 0, "recall": 0} for o in CHEXPERT_OBSERVATIONS}
    return {"clinical": {"per_observation": per}, "nlg": {"ROUGE-L": rouge}}


def _metrics():
    model = _system({o: 0.8 for o in PHANTOM_OBSERVATIONS} | {"Lung Lesion": 0.1}, 0.5)
    model["baselines"] = {"most_frequent": _system({"No Finding": 0.35}, 0.4)}
    return model


def test_macro_f1_averages_over_the_phantom_observations_only():
    scores = phantom_scores(_metrics())
    assert scores["model"]["macro_f1"] == pytest.approx((6 * 0.8 + 0.1) / 7)
    assert scores["most_frequent"]["macro_f1"] == pytest.approx(0.35 / 7)
    assert scores["model"]["rouge_l"] == 0.5 and scores["model"]["f1"]["Lung Lesion"] == 0.1


def test_summary_reads_the_eval_metrics_and_the_alignment_log(tmp_path):
    (tmp_path / "xraygpt_tiny_eval").mkdir()
    (tmp_path / "xraygpt_tiny_eval" / "metrics.json").write_text(json.dumps(_metrics()))
    log = tmp_path / "xraygpt_tiny_stage3" / "log.jsonl"
    log.parent.mkdir()
    log.write_text('{"step": 25, "loss": 0.5}\n{"step": 50, "loss": 0.4, "lr": 1e-3}\n')
    assert loss_curve(log) == [(25, 0.5), (50, 0.4)]
    summary = summarize(tmp_path, tmp_path / "phantom", losses=False)
    text = format_summary(summary)
    assert "macro F1 (7 above)" in text and "most_frequent" in text
    assert "step    50  0.4000" in text
    for obs in PHANTOM_OBSERVATIONS:
        assert obs in text


def test_summary_says_what_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="xraygpt_tiny_eval.yaml"):
        summarize(tmp_path, tmp_path, losses=False)
