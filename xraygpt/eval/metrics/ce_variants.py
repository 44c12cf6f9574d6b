"""Clinical efficacy the ways papers report it: every variant, under a stable key.

Papers on report generation state "CheXbert F1" in incompatible ways. This
module computes each choice so that a number can be compared with the paper
that used the same one. A variant is three choices:

* **label set**: ``ce14``, the 14 CheXpert observations, or ``ce5``, the five
  of CheXbert-5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural
  Effusion);
* **uncertain**: ``uncertain0`` maps an uncertain mention (-1) to 0, as the
  project's long-standing ``clinical`` block does; ``uncertain1`` maps it to 1
  (the "+" variant), in the generated and the reference report alike.
  Negative and blank are 0 in both;
* **average**: ``micro`` pools true/false positives and false negatives over
  reports and observations; ``macro_all`` averages the per-observation scores
  over every observation of the set, an observation positive in no reference
  and no generated report scoring 0; ``macro_present`` averages over the
  observations positive in at least one reference or generated report only;
  ``example`` scores each report over the set's observations and averages
  over reports (a report with nothing positive on either side scores 0, as
  scikit-learn's ``average="samples"`` with ``zero_division=0``).

Keys read ``<label set>_<uncertain>_<average>``, e.g. ``ce14_uncertain0_micro``
(equal to ``clinical.micro.f1``) and ``ce14_uncertain0_macro_all`` (equal to
``clinical.macro.f1``). Every precision/recall/F1 with an empty denominator
is 0. The functions take label dicts as :func:`xraygpt.data.labeler.label_report`
returns them (1, 0, -1 or ``None`` per observation) and work on per-report
count arrays, which :mod:`xraygpt.eval.metrics.bootstrap` resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS

CHEXBERT5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
LABEL_SETS: dict[str, tuple[str, ...]] = {"ce14": CHEXPERT_OBSERVATIONS, "ce5": CHEXBERT5}
UNCERTAIN_AS = (0, 1)
AVERAGES = ("micro", "macro_present", "macro_all", "example")
# The ones the printed table shows; all are in metrics.json.
HEADLINE = (
    "ce14_uncertain0_micro",
    "ce14_uncertain0_macro_all",
    "ce14_uncertain0_macro_present",
    "ce14_uncertain0_example",
    "ce5_uncertain0_micro",
    "ce5_uncertain1_micro",
)

_SET_TEXT = {
    "ce14": "the 14 CheXpert observations",
    "ce5": "the 5 CheXbert-5 observations (Atelectasis, Cardiomegaly, Consolidation, "
    "Edema, Pleural Effusion)",
}
_UNCERTAIN_TEXT = {
    0: "positive = 1; uncertain, negative and blank = 0",
    1: "positive and uncertain = 1; negative and blank = 0",
}
_AVERAGE_TEXT = {
    "micro": "micro: true/false positives and false negatives pooled over reports and observations",
    "macro_present": "macro over observations present: the mean of the per-observation "
    "scores over the observations positive in at least one reference or generated report",
    "macro_all": "macro over all observations of the set: the mean of the per-observation "
    "scores, an observation positive in no reference and no generated report counting 0",
    "example": "example-based: precision/recall/F1 of each report over the set's "
    "observations, averaged over reports (a report with nothing positive in either "
    "counts 0)",
}


def variant_key(label_set: str, uncertain_as: int, average: str) -> str:
    """The stable key of a variant, e.g. ``ce5_uncertain1_micro``."""
    if label_set not in LABEL_SETS or uncertain_as not in UNCERTAIN_AS or average not in AVERAGES:
        raise ValueError(f"no clinical-efficacy variant {label_set!r}/{uncertain_as!r}/{average!r}")
    return f"{label_set}_uncertain{uncertain_as}_{average}"


def all_variant_keys() -> list[str]:
    return [variant_key(s, u, a) for s in LABEL_SETS for u in UNCERTAIN_AS for a in AVERAGES]


def definition(key: str) -> str:
    """The definition of a variant in words (it goes into ``metrics.json``)."""
    label_set, uncertain, average = key.split("_", 2)
    uncertain_as = int(uncertain.removeprefix("uncertain"))
    variant_key(label_set, uncertain_as, average)  # validates
    return (
        f"F1 over {_SET_TEXT[label_set]}, labelled in the generated and the reference report "
        f"by the project's labeler; {_UNCERTAIN_TEXT[uncertain_as]}; {_AVERAGE_TEXT[average]}."
    )


def label_matrix(
    labels: Sequence[Mapping[str, int | None]],
    observations: Sequence[str],
    uncertain_as: int,
) -> np.ndarray:
    """``(reports, observations)`` 0/1 array of label dicts (1, 0, -1 or None each)."""
    if uncertain_as not in UNCERTAIN_AS:
        raise ValueError(f"uncertain_as must be 0 or 1, got {uncertain_as!r}")
    out = np.zeros((len(labels), len(observations)), dtype=np.int64)
    for i, report in enumerate(labels):
        for j, obs in enumerate(observations):
            if obs not in report:
                raise KeyError(f"report {i}: labels lack observation {obs!r}")
            value = report[obs]
            if value not in (1, 0, -1, None):
                raise ValueError(
                    f"report {i}: label of {obs!r} must be 1, 0, -1 or None, got {value!r}"
                )
            out[i, j] = value == 1 or (value == -1 and uncertain_as == 1)
    return out


def report_counts(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(reports, observations, 3)``: true positives, false positives, false negatives."""
    if predicted.shape != reference.shape:
        raise ValueError(f"label arrays differ in shape: {predicted.shape} vs {reference.shape}")
    p, r = predicted.astype(bool), reference.astype(bool)
    return np.stack([p & r, p & ~r, ~p & r], axis=-1).astype(np.int64)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, ...]:
    # Empty denominators score 0 (scikit-learn's zero_division=0).
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def pooled_scores(summed: np.ndarray, average: str) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 of counts summed over reports, ``(..., observations, 3)``.

    ``average``: micro, macro_all or macro_present; leading dimensions (bootstrap
    resamples) are kept.
    """
    tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
    if average == "micro":
        return _prf(tp.sum(-1), fp.sum(-1), fn.sum(-1))
    per_obs = _prf(tp, fp, fn)
    if average == "macro_all":
        return tuple(s.mean(-1) for s in per_obs)
    if average == "macro_present":
        present = (tp + fp + fn) > 0
        n_present = present.sum(-1)
        return tuple(
            np.where(n_present > 0, (s * present).sum(-1) / np.maximum(n_present, 1), 0.0)
            for s in per_obs
        )
    raise ValueError(f"pooled average must be micro, macro_all or macro_present, got {average!r}")


def example_scores(counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-report precision, recall, F1 of ``(reports, observations, 3)`` counts."""
    return _prf(counts[..., 0].sum(-1), counts[..., 1].sum(-1), counts[..., 2].sum(-1))


def variant_scores(counts: np.ndarray, average: str) -> dict[str, float]:
    """Precision, recall and F1 of one average over per-report counts."""
    if average == "example":
        p, r, f = (float(s.mean()) for s in example_scores(counts))
    else:
        p, r, f = (float(s) for s in pooled_scores(counts.sum(0), average))
    return {"precision": p, "recall": r, "f1": f}


def variant_counts(
    predicted: Sequence[Mapping[str, int | None]],
    reference: Sequence[Mapping[str, int | None]],
) -> dict[tuple[str, int], np.ndarray]:
    """Per-report counts of each (label set, uncertain mapping)."""
    if len(predicted) != len(reference):
        raise ValueError(
            f"{len(predicted)} predicted label sets but {len(reference)} reference ones"
        )
    if not predicted:
        raise ValueError("no reports to score")
    return {
        (name, u): report_counts(
            label_matrix(predicted, observations, u), label_matrix(reference, observations, u)
        )
        for name, observations in LABEL_SETS.items()
        for u in UNCERTAIN_AS
    }


def clinical_variants(
    predicted: Sequence[Mapping[str, int | None]],
    reference: Sequence[Mapping[str, int | None]],
) -> dict[str, Any]:
    """Every variant: ``{"f1": {key: F1}, "scores": {key: {precision, recall, f1}},
    "per_observation": {"ce14_uncertain1": {obs: {...}}, ...}}``."""
    f1: dict[str, float] = {}
    scores: dict[str, dict[str, float]] = {}
    per_observation: dict[str, dict[str, dict[str, float]]] = {}
    for (name, u), counts in variant_counts(predicted, reference).items():
        for average in AVERAGES:
            key = variant_key(name, u, average)
            scores[key] = variant_scores(counts, average)
            f1[key] = scores[key]["f1"]
        summed = counts.sum(0)
        p, r, f = _prf(summed[:, 0], summed[:, 1], summed[:, 2])
        per_observation[f"{name}_uncertain{u}"] = {
            obs: {
                "precision": float(p[j]),
                "recall": float(r[j]),
                "f1": float(f[j]),
                "support": int(summed[j, 0] + summed[j, 2]),
                "predicted": int(summed[j, 0] + summed[j, 1]),
            }
            for j, obs in enumerate(LABEL_SETS[name])
        }
    return {"f1": f1, "scores": scores, "per_observation": per_observation}


def variant_definitions() -> dict[str, str]:
    return {key: definition(key) for key in all_variant_keys()}
