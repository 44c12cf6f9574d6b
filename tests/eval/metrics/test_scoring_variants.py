"""metrics.json gains the clinical-efficacy variants and the bootstrap intervals; the rest stays."""

from __future__ import annotations

import json

import pytest

from tests.eval.metrics.sample_records import sample_records
from xraygpt.eval.metrics.ce_variants import all_variant_keys
from xraygpt.eval.metrics.scoring import format_table, score_records


def test_variants_and_intervals_beside_the_unchanged_keys() -> None:
    plain = score_records(sample_records(), meteor=False, use_java=False)
    metrics = score_records(sample_records(), meteor=False, use_java=False, bootstrap=200, seed=1)
    for key in ("n", "nlg", "clinical", "definition", "skipped", "notes"):
        assert metrics[key] == plain[key], key
    assert "ci" not in plain and "bootstrap" not in plain
    variants = metrics["clinical_variants"]["f1"]
    assert sorted(variants) == sorted(all_variant_keys())
    assert sorted(metrics["clinical_variant_definitions"]) == sorted(all_variant_keys())
    assert variants["ce14_uncertain0_micro"] == pytest.approx(metrics["clinical"]["micro"]["f1"])
    # the reference's uncertain atelectasis (image 3) matches the generated one only as 1
    assert variants["ce5_uncertain0_micro"] < variants["ce5_uncertain1_micro"] == 1.0
    for name in ("ROUGE-1", "BLEU-4", "CIDEr", "ce14_uncertain0_micro"):
        low, high = metrics["ci"][name]
        assert low <= high
    base = metrics["baselines"]["most_frequent"]
    assert "ci" in base and "clinical_variants" in base
    assert metrics["bootstrap"]["resamples"] == 200 and "CIDEr" in metrics["bootstrap"]
    table = format_table(metrics)
    low, high = metrics["ci"]["ROUGE-1"]
    assert f"{metrics['nlg']['ROUGE-1']:.3f} [{low:.3f}, {high:.3f}]" in table
    assert "ce5_uncertain1_micro" in table and "200 resamples" in table
    json.dumps(metrics)


def test_negative_resamples_are_refused() -> None:
    with pytest.raises(ValueError, match="bootstrap resamples must be >= 0"):
        score_records(sample_records(), meteor=False, use_java=False, bootstrap=-1)
