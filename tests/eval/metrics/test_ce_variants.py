"""Clinical-efficacy variants: hand-computed on three reports with an uncertain mention each."""

from __future__ import annotations

import pytest

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.data.labeler import to_binary
from xraygpt.eval.metrics.ce_variants import (
    HEADLINE,
    all_variant_keys,
    clinical_variants,
    definition,
    variant_key,
)
from xraygpt.eval.metrics.clinical import clinical_efficacy


def labels(**values: int) -> dict[str, int | None]:
    out: dict[str, int | None] = dict.fromkeys(CHEXPERT_OBSERVATIONS)
    out.update({k.replace("_", " "): v for k, v in values.items()})
    return out


# report 1: Edema uncertain in the reference, positive in the generated one;
# report 2: effusion uncertain in the generated report, plus a false atelectasis;
# report 3: normal on both sides.
REFERENCE = [labels(Cardiomegaly=1, Edema=-1), labels(Pleural_Effusion=1), labels(No_Finding=1)]
PREDICTED = [
    labels(Cardiomegaly=1, Edema=1),
    labels(Pleural_Effusion=-1, Atelectasis=1),
    labels(No_Finding=1),
]

# Worked by hand (see the comments on each line).
EXPECTED = {
    # u0: generated {C, E}, {A}, {NF}; reference {C}, {PE}, {NF}: tp 2, fp 2, fn 1
    "ce14_uncertain0_micro": 4 / 7,
    "ce14_uncertain0_macro_all": 2 / 14,  # C and NF score 1
    "ce14_uncertain0_macro_present": 2 / 5,  # present: C, E, A, PE, NF
    "ce14_uncertain0_example": (2 / 3 + 0 + 1) / 3,
    # u1: generated {C, E}, {PE, A}, {NF}; reference {C, E}, {PE}, {NF}: tp 4, fp 1
    "ce14_uncertain1_micro": 8 / 9,
    "ce14_uncertain1_macro_all": 4 / 14,
    "ce14_uncertain1_macro_present": 4 / 5,
    "ce14_uncertain1_example": (1 + 2 / 3 + 1) / 3,
    # CheXbert-5 u0: generated {C, E}, {A}, {}; reference {C}, {PE}, {}: tp 1, fp 2, fn 1
    "ce5_uncertain0_micro": 0.4,
    "ce5_uncertain0_macro_all": 1 / 5,
    "ce5_uncertain0_macro_present": 1 / 4,
    "ce5_uncertain0_example": (2 / 3 + 0 + 0) / 3,  # report 3: nothing positive -> 0
    # CheXbert-5 u1: generated {C, E}, {PE, A}, {}; reference {C, E}, {PE}, {}: tp 3, fp 1
    "ce5_uncertain1_micro": 6 / 7,
    "ce5_uncertain1_macro_all": 3 / 5,
    "ce5_uncertain1_macro_present": 3 / 4,
    "ce5_uncertain1_example": (1 + 2 / 3 + 0) / 3,
}


def test_every_variant_hand_computed() -> None:
    result = clinical_variants(PREDICTED, REFERENCE)
    assert sorted(result["f1"]) == sorted(EXPECTED) == sorted(all_variant_keys())
    for key, value in EXPECTED.items():
        assert result["f1"][key] == pytest.approx(value), key


def test_precision_recall_and_per_observation() -> None:
    result = clinical_variants(PREDICTED, REFERENCE)
    assert result["scores"]["ce14_uncertain0_micro"] == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7}
    )
    assert result["scores"]["ce14_uncertain0_example"] == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 5 / 9}
    )
    assert result["scores"]["ce5_uncertain1_micro"] == pytest.approx(
        {"precision": 0.75, "recall": 1.0, "f1": 6 / 7}
    )
    edema = result["per_observation"]["ce14_uncertain1"]["Edema"]
    assert edema == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "predicted": 1}
    assert result["per_observation"]["ce14_uncertain0"]["Edema"]["predicted"] == 1
    assert result["per_observation"]["ce14_uncertain0"]["Edema"]["support"] == 0
    assert list(result["per_observation"]["ce5_uncertain0"]) == [
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion",
    ]  # fmt: skip


def test_14_uncertain0_equals_the_existing_clinical_block() -> None:
    existing = clinical_efficacy(
        [to_binary(x) for x in PREDICTED], [to_binary(x) for x in REFERENCE]
    )
    f1 = clinical_variants(PREDICTED, REFERENCE)["f1"]
    assert f1["ce14_uncertain0_micro"] == pytest.approx(existing["micro"]["f1"])
    assert f1["ce14_uncertain0_macro_all"] == pytest.approx(existing["macro"]["f1"])


def test_nothing_positive_anywhere_scores_zero() -> None:
    empty = [labels()] * 2
    f1 = clinical_variants(empty, empty)["f1"]
    assert set(f1.values()) == {0.0}


def test_keys_definitions_and_errors() -> None:
    assert set(HEADLINE) <= set(all_variant_keys())
    text = definition("ce5_uncertain1_macro_present")
    assert "CheXbert-5" in text and "uncertain = 1" in text and "present" in text
    with pytest.raises(ValueError, match="no clinical-efficacy variant"):
        variant_key("ce13", 0, "micro")
    with pytest.raises(ValueError, match="2 reference"):
        clinical_variants(PREDICTED[:1], REFERENCE[:2])
    with pytest.raises(ValueError, match="no reports"):
        clinical_variants([], [])
    with pytest.raises(ValueError, match="must be 1, 0, -1 or None"):
        clinical_variants([labels(Edema=2)], [labels()])
