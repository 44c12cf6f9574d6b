"""NLG metrics: rouge-score, pycocoevalcap, the PTB tokenizer and its Python stand-in."""

from __future__ import annotations

import pytest

from xraygpt.eval.metrics import nlg
from xraygpt.eval.metrics.nlg import (
    coco_scores,
    java_status,
    nlg_scores,
    ptb_tokenize,
    rouge_scores,
    simple_tokenize,
    tokenize_texts,
)

REFS = [
    "The heart is normal in size. No pleural effusion or pneumothorax.",
    "Moderate cardiomegaly. Small left pleural effusion.",
    "Right upper lobe consolidation, likely pneumonia.",
]
needs_java = pytest.mark.skipif(java_status() is not None, reason=f"no Java: {java_status()}")


def test_rouge_identical_and_disjoint() -> None:
    assert rouge_scores(REFS, REFS) == pytest.approx(
        {"ROUGE-1": 1.0, "ROUGE-2": 1.0, "ROUGE-L": 1.0}
    )
    zero = rouge_scores(["xylophone"] * 3, REFS)
    assert zero == {"ROUGE-1": 0.0, "ROUGE-2": 0.0, "ROUGE-L": 0.0}
    # hand-checked: "mild cardiomegaly" vs "moderate cardiomegaly" -> 1 of 2 unigrams each way
    assert rouge_scores(["mild cardiomegaly"], ["moderate cardiomegaly"])["ROUGE-1"] == 0.5


def test_simple_tokenize_follows_ptb_conventions() -> None:
    assert simple_tokenize("The heart isn't enlarged.") == "the heart is n't enlarged"
    assert (
        simple_tokenize("A 2.5 cm nodule (left), stable; 8mm.")
        == "a 2.5 cm nodule -lrb- left -rrb- stable 8mm"
    )
    assert simple_tokenize("Pneumonia cannot be excluded?") == "pneumonia can not be excluded"
    assert simple_tokenize("Seen at 3 p.m. by Dr. X") == "seen at 3 p.m. by dr. x"
    assert simple_tokenize("") == ""


def test_scores_without_java_use_the_python_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlg, "java_status", lambda: "no 'java' executable on PATH")
    result = nlg_scores(REFS, REFS)
    assert result.skipped == {"METEOR": "needs Java: no 'java' executable on PATH"}
    assert "pure-Python" in result.notes["tokenizer"]
    assert "METEOR" not in result.scores
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L (coco)", "ROUGE-1"):
        assert result.scores[name] == pytest.approx(1.0, abs=1e-6)
    assert result.scores["CIDEr"] > 1.0
    with pytest.raises(RuntimeError, match="Java PTB tokenizer"):
        tokenize_texts(REFS, use_java=True)


def test_better_predictions_score_higher() -> None:
    close = [
        "The heart is normal. No effusion or pneumothorax.",
        "Moderate cardiomegaly with a small left effusion.",
        "Consolidation in the right upper lobe.",
    ]
    far = ["Fracture of the clavicle."] * 3
    good = coco_scores(close, REFS, use_java=False, meteor=False)
    bad = coco_scores(far, REFS, use_java=False, meteor=False)
    for name in ("BLEU-1", "BLEU-2", "ROUGE-L (coco)", "CIDEr"):
        assert good.scores[name] > bad.scores[name], name
    assert good.skipped["METEOR"].startswith("disabled")
    with pytest.raises(ValueError, match="predictions but"):
        coco_scores(close[:2], REFS, use_java=False, meteor=False)


@needs_java
def test_java_ptb_tokenizer_matches_the_python_one() -> None:
    texts = [
        *REFS, "", "Heart size isn't enlarged (stable).", "No effusion; no pneumothorax!",
        "Two\nlines\u2028and a separator.",
    ]  # fmt: skip
    assert ptb_tokenize(texts) == [simple_tokenize(t) for t in texts]
    tokens, note = tokenize_texts(texts)
    assert note.startswith("Stanford PTB") and tokens[""] == ""


@needs_java
def test_java_ptb_on_real_reports_agrees_with_python_tokens() -> None:
    from xraygpt.data.openi import read_openi_reports as read_reports

    texts = [r.text for r in read_reports()[:300] if r.text]
    java = ptb_tokenize(texts)
    python = [simple_tokenize(t) for t in texts]
    same = sum(a == b for a, b in zip(java, python, strict=True))
    assert same / len(texts) >= 0.97


@pytest.mark.slow
@needs_java
def test_meteor_through_java() -> None:
    """METEOR 1.5 (its JVM and paraphrase tables take up to a minute to load)."""
    result = nlg_scores(REFS, REFS, meteor=True)
    assert result.skipped == {}
    assert result.scores["METEOR"] == pytest.approx(1.0, abs=0.01)
    worse = nlg_scores(["The lungs are clear."] * 3, REFS, meteor=True)
    assert 0.0 <= worse.scores["METEOR"] < 0.5


@needs_java
def test_meteor_gives_its_per_report_scores_for_the_intervals() -> None:
    from xraygpt.eval.metrics.scoring import make_record, score_records

    records = [
        make_record(f"i{k}", "p", g, r)
        for k, (g, r) in enumerate(zip(REFS[::-1], REFS, strict=True))
    ]
    metrics = score_records(records, bootstrap=200, seed=0)
    low, high = metrics["ci"]["METEOR"]
    assert low <= metrics["nlg"]["METEOR"] <= high
    assert "shifted" in metrics["bootstrap"]["METEOR"]
