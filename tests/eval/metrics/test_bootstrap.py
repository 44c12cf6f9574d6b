"""Bootstrap intervals and paired comparisons: exact on the full sample, seeded, vectorised."""

from __future__ import annotations

import numpy as np
import pytest

from tests.report_text import random_reports
from xraygpt.data.labeler import label_report
from xraygpt.eval.metrics import bootstrap as boot
from xraygpt.eval.metrics.ce_variants import clinical_variants
from xraygpt.eval.metrics.nlg import nlg_scores, tokenize_texts


def stats_of(generated: list[str], references: list[str]) -> boot.ReportStats:
    tokens, _ = tokenize_texts([*generated, *references], use_java=False)
    return boot.report_statistics(
        generated,
        references,
        tokens,
        [label_report(t) for t in generated],
        [label_report(t) for t in references],
    )


REFS = random_reports(40, 1)
GEN = random_reports(40, 2)


def test_full_sample_reproduces_the_point_estimates() -> None:
    point = boot.point_values(stats_of(GEN, REFS))
    nlg = nlg_scores(GEN, REFS, use_java=False, meteor=False).scores
    for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU-1", "BLEU-4", "ROUGE-L (coco)", "CIDEr"):
        assert point[name] == pytest.approx(nlg[name], rel=1e-9, abs=1e-12), name
    variants = clinical_variants([label_report(t) for t in GEN], [label_report(t) for t in REFS])
    for key, value in variants["f1"].items():
        assert point[key] == pytest.approx(value, abs=1e-12), key


def test_interval_of_a_constant_metric_has_zero_width() -> None:
    ci = boot.confidence_intervals(stats_of(REFS, REFS), resamples=200, seed=3)
    for name in ("ROUGE-1", "ROUGE-L", "ROUGE-L (coco)", "ce14_uncertain0_micro"):
        assert ci[name] == [1.0, 1.0], name
    # one report, repeated: every resample is the same corpus, so no metric can vary
    same = [GEN[0]] * 20
    for name, (low, high) in boot.confidence_intervals(stats_of(same, REFS[:20][:1] * 20)).items():
        assert low == pytest.approx(high, abs=1e-12), name


def test_seeded_and_brackets_the_estimate() -> None:
    stats = stats_of(GEN, REFS)
    first = boot.confidence_intervals(stats, resamples=300, seed=7)
    assert boot.confidence_intervals(stats, resamples=300, seed=7) == first
    assert boot.confidence_intervals(stats, resamples=300, seed=8) != first
    point = boot.point_values(stats)
    for name in ("ROUGE-1", "BLEU-4", "CIDEr", "ce14_uncertain0_micro"):
        low, high = first[name]
        assert low < point[name] < high, name


def test_resample_weights_are_draws_with_replacement() -> None:
    weights = boot.resample_weights(50, 400, seed=0)
    assert weights.shape == (400, 50)
    assert (weights.sum(1) == 50).all()
    assert np.allclose(weights.mean(0), 1.0, atol=0.25)  # each report drawn once on average
    with pytest.raises(ValueError, match="at least one report"):
        boot.resample_weights(0, 10, seed=0)


def test_identical_systems_differ_by_zero_with_p_one() -> None:
    stats = stats_of(GEN, REFS)
    result = boot.paired_comparison(stats, stats_of(GEN, REFS), resamples=200, seed=0)
    for key, row in result.items():
        assert row["diff"] == 0.0 and row["ci"] == [0.0, 0.0] and row["p"] == 1.0, key


def test_copying_the_references_beats_a_shuffled_copy() -> None:
    shuffled = REFS[1:] + REFS[:1]
    result = boot.paired_comparison(
        stats_of(REFS, REFS), stats_of(shuffled, REFS), resamples=1000, seed=0
    )
    for key in ("ROUGE-L", "BLEU-4", "CIDEr", "ce14_uncertain0_micro"):
        assert result[key]["diff"] > 0 and result[key]["ci"][0] > 0, key
        assert result[key]["p"] < 0.01, key
    with pytest.raises(ValueError, match="must be the same"):
        boot.paired_comparison(stats_of(REFS[:3], REFS[:3]), stats_of(REFS, REFS))


def test_format_ci() -> None:
    assert boot.format_ci(0.5114, [0.4921, 0.53]) == "0.511 [0.492, 0.530]"
    assert boot.format_ci(0.5, None) == "0.500"


def test_per_observation_f1_on_the_full_sample() -> None:
    stats = stats_of(GEN, REFS)
    values = boot.metric_values(stats, np.ones((1, stats.n)), per_observation=True)
    variants = clinical_variants([label_report(t) for t in GEN], [label_report(t) for t in REFS])
    for variant, per_obs in variants["per_observation"].items():
        for obs, scores in per_obs.items():
            assert values[f"{variant}/{obs}"][0] == pytest.approx(scores["f1"]), (variant, obs)
    ci = boot.confidence_intervals(stats, resamples=50, seed=0, per_observation=True)
    assert "ce5_uncertain1/Edema" in ci and "ROUGE-1" in ci


def test_a_shifted_metric_keeps_its_corpus_value_and_takes_the_per_report_spread() -> None:
    tokens, _ = tokenize_texts([*GEN, *REFS], use_java=False)
    labels = ([label_report(t) for t in GEN], [label_report(t) for t in REFS])
    spread = np.linspace(0.1, 0.5, len(GEN))
    stats = boot.report_statistics(
        GEN, REFS, tokens, *labels, shifted={"METEOR": (0.321, spread.tolist())}
    )
    assert boot.point_values(stats)["METEOR"] == pytest.approx(0.321, abs=1e-12)
    low, high = boot.confidence_intervals(stats, resamples=500, seed=1)["METEOR"]
    assert low < 0.321 < high and high - low > 0.01
    flat = boot.report_statistics(
        GEN, REFS, tokens, *labels, shifted={"METEOR": (0.321, [0.2] * len(GEN))}
    )
    assert boot.confidence_intervals(flat, resamples=200, seed=1)["METEOR"] == pytest.approx(
        [0.321, 0.321]
    )
    with pytest.raises(ValueError, match="METEOR: 3 per-report scores for 40 reports"):
        boot.report_statistics(GEN, REFS, tokens, *labels, shifted={"METEOR": (0.3, [0.1] * 3)})


def one_shot_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """The resamples as one ``(resamples, n)`` matrix, drawn in one request (the unchunked way)."""
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = index + (np.arange(resamples) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def percentiles(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    tail = 100 * (1 - 0.95) / 2
    return {k: [float(x) for x in np.percentile(v, [tail, 100 - tail])] for k, v in values.items()}


def test_chunked_resampling_gives_the_one_shot_intervals_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens, _ = tokenize_texts([*GEN, *REFS], use_java=False)
    labels = ([label_report(t) for t in GEN], [label_report(t) for t in REFS])
    spread = np.linspace(0.1, 0.5, len(GEN)).tolist()
    stats = boot.report_statistics(GEN, REFS, tokens, *labels, shifted={"METEOR": (0.3, spread)})
    shuffled = REFS[1:] + REFS[:1]
    other = boot.report_statistics(
        shuffled, REFS, tokens, [label_report(t) for t in shuffled], labels[1],
        shifted={"METEOR": (0.2, spread[::-1])},
    )  # fmt: skip
    resamples, seed = 301, 4
    weights = one_shot_weights(stats.n, resamples, seed)
    expected = percentiles(boot.metric_values(stats, weights, per_observation=True))
    values_a, values_b = boot.metric_values(stats, weights), boot.metric_values(other, weights)
    for rows in (1, 3, 7, 64, resamples + 1):  # rows per chunk; the last: one chunk
        monkeypatch.setattr(boot, "CHUNK_ELEMENTS", rows * stats.n)
        assert np.array_equal(np.concatenate(list(boot.resample_chunks(stats.n, resamples, seed))),
                              weights), rows  # fmt: skip
        ci = boot.confidence_intervals(stats, resamples, seed, per_observation=True)
        assert ci == expected, rows
        paired = boot.paired_comparison(stats, other, resamples, seed)
        for key, row in paired.items():
            diff = values_a[key] - values_b[key]
            diff = np.where(np.abs(diff) < 1e-12, 0.0, diff)
            assert row["ci"] == percentiles({key: diff})[key], (rows, key)


def synthetic_stats(n: int) -> boot.ReportStats:
    """Per-report statistics of ``n`` made-up reports (no text to score: fast at any size)."""
    rng = np.random.default_rng(0)
    return boot.ReportStats(
        means={name: rng.random(n) for name in ("ROUGE-1", "ROUGE-L", "CIDEr")},
        bleu=rng.integers(1, 40, size=(n, 10)).astype(float),
        ce={("ce14", 0): rng.integers(0, 2, size=(n, 14, 3))},
        shifted={"METEOR": (0.3, rng.random(n))},
    )


def test_many_resamples_take_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    n, resamples = 500, 10_000
    full = resamples * n * 8  # bytes of one (resamples, n) matrix: 40 MB
    monkeypatch.setattr(boot, "CHUNK_ELEMENTS", 2**16)  # chunks of 131 resamples
    a, b = synthetic_stats(n), synthetic_stats(n)
    tracemalloc.start()
    try:
        ci = boot.confidence_intervals(a, resamples, seed=0)
        _, peak_ci = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        boot.paired_comparison(a, b, resamples, seed=0)
        _, peak_paired = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the per-resample values of every metric (~20 x 10,000 floats per system) and a chunk
    assert peak_ci < full / 5 and peak_paired < full / 5, (peak_ci, peak_paired, full)
    low, high = ci["ROUGE-1"]
    assert low < a.means["ROUGE-1"].mean() < high


def test_the_default_chunk_is_tens_of_megabytes() -> None:
    assert 2**20 <= boot.CHUNK_ELEMENTS * 8 <= 32 * 2**20
