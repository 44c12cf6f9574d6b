"""Bootstrap confidence intervals and paired comparisons over reports, vectorised.

A resample draws ``n`` reports with replacement (rows of a seeded
``(resamples, n)`` index matrix, turned into per-resample counts of each
report), and every metric is recomputed from per-report sufficient statistics:

* **ROUGE-1/2/L** (rouge-score) and **ROUGE-L (coco)**: per-report scores,
  whose mean is the metric;
* **BLEU-1..4** (pycocoevalcap, corpus level): per-report clipped n-gram
  matches, n-gram totals and hypothesis/reference lengths, summed per
  resample, then pycocoevalcap's formula (its ``tiny``/``small`` constants and
  brevity penalty);
* **CIDEr** (CIDEr-D): the document frequencies and the reference-length
  normaliser stay those of the full test set; the per-report CIDEr-D scores
  computed with them are averaged per resample. Recomputing the frequencies
  for each resample would make a repeated report rarer than itself and cost
  a corpus pass per resample;
* **clinical efficacy** (every variant of :mod:`xraygpt.eval.metrics.ce_variants`):
  per-report true/false positive and false negative counts per observation,
  summed per resample (micro, macro), or per-report F1 averaged (example).

* **METEOR**: its corpus score pools alignment statistics inside the Java
  scorer, which pycocoevalcap does not expose per report; it does give each
  report's own METEOR. A resample's METEOR is the corpus score shifted by how
  much the resampled mean of the per-report scores differs from their full
  mean (the per-report scores carry the variability, the corpus score the level).

On the full sample each statistic reproduces the point estimate of
:mod:`xraygpt.eval.metrics.nlg` and :mod:`xraygpt.eval.metrics.clinical` (the tests
check it). Intervals are percentile intervals (2.5th and 97.5th percentiles).
A paired comparison applies the same resamples to two systems scored
against the same references; its two-sided p-value is
``min(1, 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (resamples + 1))`` over the
resampled differences ``d``.

The resamples are drawn and scored a chunk of rows at a time (about
:data:`CHUNK_ELEMENTS` draws each, whatever ``resamples`` and ``n``), from one
seeded stream: the draws, and so the intervals, are those of the whole matrix
at once, in bounded memory (100,000 resamples of 3,000 reports would take
2.2 GiB per matrix at once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xraygpt.eval.metrics.ce_variants import (
    AVERAGES,
    LABEL_SETS,
    example_scores,
    pooled_scores,
    variant_counts,
)

METHOD = (
    "percentile bootstrap over reports (seeded; the same resamples for the model and its "
    "baselines); BLEU from per-report n-gram counts pooled per resample; ROUGE, CIDEr and "
    "example-based CE from per-report scores averaged per resample; micro/macro CE from "
    "per-report counts pooled per resample"
)
CIDER_NOTE = (
    "CIDEr-D document frequencies and the reference-length normaliser are those of the full "
    "test set, kept fixed under resampling; each resample averages the per-report scores"
)
METEOR_NOTE = (
    "the corpus METEOR shifted, per resample, by the change of the mean per-report METEOR "
    "(the corpus score pools alignment statistics inside the Java scorer, which "
    "pycocoevalcap does not expose per report)"
)
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap bleu_scorer's constants
#: Draws per chunk of resamples: 2**21, 16 MiB per (rows, n) array of 8-byte numbers.
CHUNK_ELEMENTS = 2**21


@dataclass
class ReportStats:
    """Per-report sufficient statistics of one system against the references."""

    means: dict[str, np.ndarray]  # metric -> (n,) values whose mean is the metric
    bleu: np.ndarray  # (n, 10): test length, reference length, guesses 1..4, matches 1..4
    ce: dict[tuple[str, int], np.ndarray]  # (label set, uncertain) -> (n, K, 3) tp/fp/fn
    # metric -> (corpus value, (n,) per-report values): the corpus value moved by the
    # resampled change of the per-report mean (METEOR)
    shifted: dict[str, tuple[float, np.ndarray]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.bleu.shape[0])


def _rouge_per_report(generated: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    from rouge_score import rouge_scorer

    from xraygpt.eval.metrics.nlg import ROUGE_SCORE_KEYS

    logging.getLogger("absl").setLevel(logging.WARNING)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_SCORE_KEYS.values()), use_stemmer=True)
    out = {name: np.zeros(len(generated)) for name in ROUGE_SCORE_KEYS}
    for i, (g, r) in enumerate(zip(generated, references, strict=True)):
        scores = scorer.score(r, g)
        for name, key in ROUGE_SCORE_KEYS.items():
            out[name][i] = scores[key].fmeasure
    return out


def _bleu_counts(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = np.zeros((len(hyps), 10), dtype=np.float64)
    for i, (h, r) in enumerate(zip(hyps, refs, strict=True)):
        comps = cook_test(h, cook_refs([r]))
        # One reference: its length is the "closest" one.
        rows[i] = [comps["testlen"], comps["reflen"][0], *comps["guess"], *comps["correct"]]
    return rows


def bleu_from_counts(summed: np.ndarray) -> dict[str, np.ndarray]:
    """BLEU-1..4 of counts summed over reports, ``(..., 10)`` (pycocoevalcap's formula)."""
    testlen, reflen = summed[..., 0], summed[..., 1]
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    out, product = {}, np.ones_like(testlen)
    for k in range(4):
        product = product * (summed[..., 6 + k] + _TINY) / (summed[..., 2 + k] + _SMALL)
        out[f"BLEU-{k + 1}"] = product ** (1 / (k + 1)) * penalty
    return out


def report_statistics(
    generated: Sequence[str],
    references: Sequence[str],
    tokens: Mapping[str, str],
    generated_labels: Sequence[Mapping[str, int | None]],
    reference_labels: Sequence[Mapping[str, int | None]],
    shifted: Mapping[str, tuple[float, Sequence[float]]] | None = None,
) -> ReportStats:
    """Per-report statistics of one system. ``tokens``: ``{text: PTB-tokenized}`` as
    :func:`xraygpt.eval.metrics.nlg.tokenize_texts` gives it; labels as the labeler gives them."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not generated or len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports for {len(references)} references")
    hyps = [tokens[t] for t in generated]
    refs = [tokens[t] for t in references]
    res = {i: [h] for i, h in enumerate(hyps)}
    gts = {i: [r] for i, r in enumerate(refs)}
    means = _rouge_per_report(generated, references)
    means["ROUGE-L (coco)"] = np.asarray(Rouge().compute_score(gts, res)[1], dtype=np.float64)
    means["CIDEr"] = np.asarray(Cider().compute_score(gts, res)[1], dtype=np.float64)
    ce = variant_counts(generated_labels, reference_labels)
    moved = {
        name: (float(value), np.asarray(per_report, dtype=np.float64))
        for name, (value, per_report) in (shifted or {}).items()
    }
    for name, (_, per_report) in moved.items():
        if per_report.shape != (len(generated),):
            raise ValueError(
                f"{name}: {per_report.shape[0]} per-report scores for {len(generated)} reports"
            )
    return ReportStats(means=means, bleu=_bleu_counts(hyps, refs), ce=ce, shifted=moved)


def resample_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """``(rows, n)`` blocks of :func:`resample_weights`, in order, of about
    :data:`CHUNK_ELEMENTS` draws each: one seeded stream, so their rows stacked are
    exactly the one-shot matrix (the generator draws a row's integers the same way
    whatever the size of the request)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"need at least one report and one resample, got {n} and {resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        index = rng.integers(0, n, size=(k, n))
        index += (np.arange(k) * n)[:, None]  # row r's draws count in bins r*n .. r*n+n-1
        counts = np.bincount(index.ravel(), minlength=k * n)
        del index
        yield counts.reshape(k, n).astype(np.float64)


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)``: how often each report is drawn in each resample (all at once:
    for small cases; the intervals go through :func:`resample_chunks`)."""
    return np.concatenate(list(resample_chunks(n, resamples, seed)))


def resampled_values(
    systems: Sequence[ReportStats], resamples: int, seed: int, per_observation: bool = False
) -> list[dict[str, np.ndarray]]:
    """Per system, :func:`metric_values` under the same ``resamples`` resamples
    (``{metric: (resamples,)}``), scored a chunk of resamples at a time."""
    if len({s.n for s in systems}) != 1:
        raise ValueError(f"resampling systems of {[s.n for s in systems]} reports together")
    out: list[dict[str, np.ndarray]] = [{} for _ in systems]
    start = 0
    for weights in resample_chunks(systems[0].n, resamples, seed):
        stop = start + weights.shape[0]
        for store, stats in zip(out, systems, strict=True):
            for key, values in metric_values(stats, weights, per_observation).items():
                store.setdefault(key, np.empty(resamples))[start:stop] = values
        start = stop
    return out


def _weighted_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``weights @ values`` for real-valued ``values``, each row summed on its own (numpy's
    pairwise sum along the row): a BLAS product rounds a row differently with the number
    of rows beside it, which would make chunked resampling differ from one-shot in the
    last bits."""
    return (weights * values).sum(axis=1)


def metric_values(
    stats: ReportStats, weights: np.ndarray, per_observation: bool = False
) -> dict[str, np.ndarray]:
    """Every metric under each row of ``weights`` (``(resamples, n)``, rows summing to n).

    ``per_observation``: also each observation's F1, as ``"ce14_uncertain0/Edema"``.
    """
    total = weights.sum(1)
    out: dict[str, np.ndarray] = {
        name: _weighted_sums(weights, values) / total for name, values in stats.means.items()
    }
    # Counts are whole numbers: their products are exact in any order, so BLAS may sum them.
    out.update(bleu_from_counts(weights @ stats.bleu))
    for name, (value, per_report) in stats.shifted.items():
        out[name] = value + _weighted_sums(weights, per_report) / total - per_report.mean()
    for (label_set, u), counts in stats.ce.items():
        n, k, _ = counts.shape
        summed = (weights @ counts.reshape(n, k * 3).astype(np.float64)).reshape(-1, k, 3)
        for average in AVERAGES:
            key = f"{label_set}_uncertain{u}_{average}"
            if average == "example":
                out[key] = _weighted_sums(weights, example_scores(counts)[2]) / total
            else:
                out[key] = pooled_scores(summed, average)[2]
        if per_observation:
            tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                # F1 = 2 tp / (2 tp + fp + fn), 0 when nothing is positive on either side
                f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
            for j, obs in enumerate(LABEL_SETS[label_set]):
                out[f"{label_set}_uncertain{u}/{obs}"] = f1[:, j]
    return out


def point_values(stats: ReportStats) -> dict[str, float]:
    """The metrics on the full sample (the point estimates)."""
    return {k: float(v[0]) for k, v in metric_values(stats, np.ones((1, stats.n))).items()}


def confidence_intervals(
    stats: ReportStats,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    per_observation: bool = False,
) -> dict[str, list[float]]:
    """``{metric: [low, high]}``, percentile bootstrap intervals."""
    (values,) = resampled_values([stats], resamples, seed, per_observation)
    tail = 100 * (1 - level) / 2
    return {k: [float(x) for x in np.percentile(v, [tail, 100 - tail])] for k, v in values.items()}


def paired_comparison(
    a: ReportStats,
    b: ReportStats,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """``{metric: {"a", "b", "diff", "ci", "p"}}``: A - B over the same resamples."""
    if a.n != b.n:
        raise ValueError(f"paired comparison of {a.n} and {b.n} reports: they must be the same")
    point_a, point_b = point_values(a), point_values(b)
    values_a, values_b = resampled_values([a, b], resamples, seed)
    tail = 100 * (1 - level) / 2
    out = {}
    for key, va in values_a.items():
        diff = va - values_b[key]
        # Floating-point noise on identical systems must not tip the sign count.
        diff = np.where(np.abs(diff) < 1e-12, 0.0, diff)
        below, above = int((diff <= 0).sum()), int((diff >= 0).sum())
        p = min(1.0, 2 * min(below + 1, above + 1) / (resamples + 1))
        out[key] = {
            "a": point_a[key],
            "b": point_b[key],
            "diff": point_a[key] - point_b[key],
            "ci": [float(x) for x in np.percentile(diff, [tail, 100 - tail])],
            "p": p,
        }
    return out


def format_ci(value: float, ci: Sequence[float] | None) -> str:
    """``0.511 [0.492, 0.530]`` (or the value alone without an interval)."""
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
