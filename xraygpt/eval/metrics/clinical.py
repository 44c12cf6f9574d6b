"""Clinical efficacy: do the generated reports state the same findings as the references?

Both reports of a pair are labelled with the project's rule-based labeler
(:mod:`xraygpt.data.labeler`) over the 14 CheXpert observations and
binarised (positive = 1; negative, uncertain and blank = 0). The reference
labels are the truth. Per observation: precision, recall, F1 over reports;
micro: the counts pooled over the 14 observations; macro: the mean of the 14
per-observation scores. :data:`xraygpt.data.labeler.BINARY_DEFINITION`
says the same in words and goes into ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    # An empty denominator scores 0 (scikit-learn's zero_division=0).
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def clinical_efficacy(
    predicted: Sequence[dict[str, int]],
    reference: Sequence[dict[str, int]],
    observations: Sequence[str] = CHEXPERT_OBSERVATIONS,
) -> dict:
    """Micro, macro and per-observation precision/recall/F1 of binary label dicts.

    ``predicted[i]`` and ``reference[i]`` map each observation to 0 or 1 (see
    :func:`xraygpt.data.labeler.to_binary`).
    """
    if len(predicted) != len(reference):
        raise ValueError(
            f"{len(predicted)} predicted label sets but {len(reference)} reference ones"
        )
    if not predicted:
        raise ValueError("no reports to score")
    per_observation = {}
    totals = [0, 0, 0]
    for obs in observations:
        tp = fp = fn = 0
        for pred, ref in zip(predicted, reference, strict=True):
            p, r = pred[obs], ref[obs]
            if p not in (0, 1) or r not in (0, 1):
                raise ValueError(f"labels of {obs!r} must be 0 or 1, got {p!r} and {r!r}")
            tp += p and r
            fp += p and not r
            fn += r and not p
        scores = _prf(tp, fp, fn)
        scores.update(support=tp + fn, predicted=tp + fp)
        per_observation[obs] = scores
        totals = [totals[0] + tp, totals[1] + fp, totals[2] + fn]
    micro = _prf(*totals)
    macro = {
        key: sum(per_observation[o][key] for o in observations) / len(observations)
        for key in ("precision", "recall", "f1")
    }
    return {"micro": micro, "macro": macro, "per_observation": per_observation}
