"""Rule-based report cleaning: filters, comparisons, blanks, views, merging, MIMIC sections."""

import pytest

from xraygpt.data.report_cleaning import (
    CleaningStats,
    clean_sentence,
    filter_reason,
    mimic_sections,
    split_sentences,
    summarize,
)

TEN_WORDS = "The heart size is normal and the lungs are clear."


@pytest.mark.parametrize(
    ("findings", "impression", "reason"),
    [
        (None, "No acute disease.", "no_findings"),
        ("   ", "No acute disease.", "no_findings"),
        (TEN_WORDS, None, "no_impression"),
        ("The heart size is normal, lungs are clear.", "Normal chest.", "findings_under_10_words"),
        (TEN_WORDS, "Normal.", "impression_under_2_words"),
        (TEN_WORDS, "Normal chest.", None),
    ],
)
def test_filters_apply_in_order(findings, impression, reason):
    assert filter_reason(findings, impression) == reason


def _clean(sentence):
    stats = CleaningStats()
    return clean_sentence(sentence, stats), stats.counts


@pytest.mark.parametrize(
    "sentence",
    [
        "Compared to the prior study, there is no change.",
        "The cardiomediastinal silhouette is unchanged.",
        "Interval increase in the right pleural effusion.",
        "The mediastinum is stable.",
        "Heart size is similar to the previous radiograph.",
        "Previously seen nodule has resolved.",
        "No significant change since ___.",
    ],
)
def test_comparison_sentences_are_dropped(sentence):
    cleaned, counts = _clean(sentence)
    assert cleaned is None and counts["sentences_dropped_comparison"] == 1


def test_a_finding_stated_as_stable_keeps_the_finding():
    assert _clean("Stable cardiomegaly.")[0] == "Cardiomegaly."
    assert _clean("Left basilar opacity is again seen.")[0] == "Left basilar opacity is seen."
    # history is not a comparison
    assert _clean("Evidence of prior granulomatous disease.")[0] == (
        "Evidence of prior granulomatous disease."
    )


def test_blanks_are_removed_and_conversations_dropped():
    assert _clean("Normal chest x-XXXX.")[0] == "Normal chest x-ray."
    cleaned, counts = _clean("Calcified lymph XXXX are seen in the left hilum.")
    assert (
        cleaned == "Calcified lymph are seen in the left hilum." and counts["blanks_removed"] == 1
    )
    assert _clean("Findings discussed with Dr. ___ by telephone at ___ on ___.")[0] is None
    assert (
        _clean("___ year old with pneumonia; no effusion.")[0]
        == "Year old with pneumonia; no effusion."
    )
    assert _clean("Normal XXXX.")[0] is None  # a stub once the blank is gone
    assert _clean("Cardiomegaly.")[0] == "Cardiomegaly."  # a one-word finding stays


def test_view_mentions_are_removed():
    assert _clean("PA and lateral views of the chest were obtained.")[0] is None
    assert _clean("Chest.")[0] is None
    assert _clean("Frontal and lateral views of the chest show normal heart size.")[0] == (
        "Normal heart size."
    )
    assert _clean("A nodule is seen on the lateral view.")[0] == "A nodule is seen."
    cleaned, counts = _clean("There is opacity at the left base, on the frontal projection.")
    assert cleaned == "There is opacity at the left base." and counts["view_phrases_removed"] == 1


def test_sentences_split_on_ends_but_not_on_doctor_or_decimals():
    text = "1. Heart is 1.5 cm larger.  2. Dr. Smith agrees. No effusion!"
    assert split_sentences(text) == ["Heart is 1.5 cm larger.", "Dr. Smith agrees.", "No effusion!"]
    assert split_sentences("Tubing over the abdomen.. Clear lungs.") == [
        "Tubing over the abdomen.",
        "Clear lungs.",
    ]


def test_summary_merges_findings_and_impression_without_repeats():
    stats = CleaningStats()
    summary = summarize(
        "PA and lateral views were obtained. No pneumothorax. Stable cardiomegaly.",
        "No pneumothorax. Compared to prior, unchanged. Cardiomegaly without edema.",
        stats,
    )
    assert summary == "No pneumothorax. Cardiomegaly. Cardiomegaly without edema."
    assert stats.counts["sentences_dropped_duplicate"] == 1
    assert summarize("No change from prior.", "Unchanged.", CleaningStats()) == ""


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_mimic_sections_are_found_by_their_headers():
    findings, impression = mimic_sections(MIMIC_REPORT)
    assert findings == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral "
        "nodular opacities that most likely represent nipple shadows."
    )
    assert impression == "No acute cardiopulmonary process."
    assert mimic_sections("FINDINGS: Lungs clear.\n") == ("Lungs clear.", None)
    assert mimic_sections("CONCLUSION: Normal.\n")[1] == "Normal."
    assert mimic_sections("no headers at all") == (None, None)
