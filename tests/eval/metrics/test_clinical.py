"""Clinical-efficacy precision / recall / F1 over the 14 CheXpert observations."""

from __future__ import annotations

import pytest

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.eval.metrics.clinical import clinical_efficacy


def vec(*positive: str) -> dict[str, int]:
    return {o: int(o in positive) for o in CHEXPERT_OBSERVATIONS}


def test_hand_computed_counts() -> None:
    predicted = [vec("Cardiomegaly", "Edema"), vec("Cardiomegaly"), vec("No Finding")]
    reference = [vec("Cardiomegaly"), vec("Pleural Effusion"), vec("No Finding")]
    result = clinical_efficacy(predicted, reference)
    card = result["per_observation"]["Cardiomegaly"]  # tp 1, fp 1, fn 0
    assert (card["precision"], card["recall"], card["support"], card["predicted"]) == (
        0.5,
        1.0,
        1,
        2,
    )
    assert card["f1"] == pytest.approx(2 / 3)
    assert result["per_observation"]["Pleural Effusion"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0,
    }  # fmt: skip
    # micro: tp 2 (cardiomegaly, no finding), fp 2 (cardiomegaly, edema), fn 1 (effusion)
    assert result["micro"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    # macro over all 14; only Cardiomegaly (2/3) and No Finding (1) score
    assert result["macro"]["f1"] == pytest.approx((2 / 3 + 1) / 14)


def test_perfect_and_errors() -> None:
    refs = [vec("Cardiomegaly"), vec("Atelectasis", "Support Devices")]
    assert clinical_efficacy(refs, refs)["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    with pytest.raises(ValueError, match="2 reference"):
        clinical_efficacy(refs[:1], refs)
    with pytest.raises(ValueError, match="no reports"):
        clinical_efficacy([], [])
    bad = [{**vec(), "Edema": -1}]
    with pytest.raises(ValueError, match="'Edema' must be 0 or 1"):
        clinical_efficacy(bad, [vec()])
