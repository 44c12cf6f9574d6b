"""The rule-based CheXpert labeler on report phrasing."""

from __future__ import annotations

import numpy as np
import pytest

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS, PHANTOM_OBSERVATIONS
from xraygpt.data.labeler import (
    NEGATIVE,
    POSITIVE,
    UNCERTAIN,
    label_report,
    label_reports,
    to_binary,
)


def states(text: str) -> dict[str, int]:
    """The observations the report mentions (blank ones left out)."""
    return {k: v for k, v in label_report(text).items() if v is not None}


# The phrases, then common variants; each with the state it must give.
PHRASES = [
    ("no pleural effusion", "Pleural Effusion", NEGATIVE),
    ("without evidence of pneumothorax", "Pneumothorax", NEGATIVE),
    ("heart size is normal", "Cardiomegaly", NEGATIVE),
    ("mild cardiomegaly", "Cardiomegaly", POSITIVE),
    ("possible left basilar atelectasis", "Atelectasis", UNCERTAIN),
    ("effusions have resolved", "Pleural Effusion", NEGATIVE),
    ("stable support devices", "Support Devices", POSITIVE),
    ("The heart is not enlarged.", "Cardiomegaly", NEGATIVE),
    ("The cardiac silhouette is moderately enlarged.", "Cardiomegaly", POSITIVE),
    ("Heart size is at the upper limits of normal.", "Cardiomegaly", UNCERTAIN),
    ("Borderline cardiomegaly.", "Cardiomegaly", POSITIVE),
    ("Free of focal consolidation.", "Consolidation", NEGATIVE),
    ("Negative for pneumothorax.", "Pneumothorax", NEGATIVE),
    ("Pneumonia cannot be excluded.", "Pneumonia", UNCERTAIN),
    ("Cannot exclude pneumonia.", "Pneumonia", UNCERTAIN),
    ("Left lower lobe opacity may represent pneumonia.", "Pneumonia", UNCERTAIN),
    ("Left lower lobe opacity may represent pneumonia.", "Lung Opacity", POSITIVE),
    ("Atelectasis versus scarring at the left base.", "Atelectasis", UNCERTAIN),
    ("No change in the small left pleural effusion.", "Pleural Effusion", POSITIVE),
    ("No significant interval change in mild cardiomegaly.", "Cardiomegaly", POSITIVE),
    ("The pneumothorax is no longer seen.", "Pneumothorax", NEGATIVE),
    ("The endotracheal tube has been removed.", "Support Devices", NEGATIVE),
    ("Right PICC line tip in the SVC.", "Support Devices", POSITIVE),
    ("A left chest wall pacemaker is present.", "Support Devices", POSITIVE),
    ("Mild pulmonary vascular congestion.", "Edema", POSITIVE),
    ("No pulmonary edema.", "Edema", NEGATIVE),
    ("Healed left rib fractures.", "Fracture", POSITIVE),
    ("A 2 cm nodule in the left upper lobe.", "Lung Lesion", POSITIVE),
    ("Right upper lobe mass.", "Lung Lesion", POSITIVE),
    ("Widened mediastinum.", "Enlarged Cardiomediastinum", POSITIVE),
    ("Normal cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", NEGATIVE),
    ("Biapical pleural thickening.", "Pleural Other", POSITIVE),
    ("Patchy airspace disease in the lingula.", "Lung Opacity", POSITIVE),
    ("Airspace consolidation in the right lower lobe.", "Consolidation", POSITIVE),
    ("Right pneumothorax with a visible pleural line.", "Pneumothorax", POSITIVE),
    ("No focal air space opacity to suggest a pneumonia.", "Pneumonia", NEGATIVE),
    ("Findings suggest pneumonia.", "Pneumonia", UNCERTAIN),
    ("Questionable small left pleural effusion.", "Pleural Effusion", UNCERTAIN),
]


@pytest.mark.parametrize(("text", "observation", "state"), PHRASES)
def test_phrase(text: str, observation: str, state: int) -> None:
    assert label_report(text)[observation] == state, states(text)


def test_every_observation_is_returned_and_unmentioned_ones_are_blank() -> None:
    labels = label_report("Mild cardiomegaly.")
    assert tuple(labels) == CHEXPERT_OBSERVATIONS
    assert labels["Pneumothorax"] is None
    assert labels["No Finding"] is None


def test_scope_ends_at_contrast_words_and_sentences() -> None:
    assert states("No pleural effusion but mild cardiomegaly.") == {
        "Pleural Effusion": NEGATIVE,
        "Cardiomegaly": POSITIVE,
    }
    assert states("No pneumothorax. Small left effusion.")["Pleural Effusion"] == POSITIVE
    # a cue after a mention does not reach across "with"
    assert (
        label_report("Cardiomegaly with pulmonary vascularity that is normal.")["Cardiomegaly"]
        == POSITIVE
    )


def test_negated_list_keeps_its_scope() -> None:
    labels = label_report("No focal consolidation, pleural effusion, or pneumothorax.")
    for obs in ("Consolidation", "Pleural Effusion", "Pneumothorax"):
        assert labels[obs] == NEGATIVE
    # "suspicious" in such a list is an adjective, not a hedge
    labels = label_report("No focal consolidation, suspicious pulmonary opacity or effusion.")
    assert labels["Lung Opacity"] == NEGATIVE


def test_positive_beats_uncertain_beats_negative_across_mentions() -> None:
    assert label_report("No effusion on the right. Small left effusion.")["Pleural Effusion"] == 1
    assert label_report("No pneumonia. Possible pneumonia at the base.")["Pneumonia"] == -1


def test_exclusions() -> None:
    assert label_report("Small pericardial effusion.")["Pleural Effusion"] is None
    assert label_report("Lytic lesion of the humerus.")["Lung Lesion"] is None
    assert label_report("Soft tissue edema of the chest wall.")["Edema"] is None
    # a pleural line is a sign of pneumothorax, not a catheter
    assert label_report("Pneumothorax with a visible pleural line.")["Support Devices"] is None


def test_no_finding() -> None:
    assert label_report("The lungs are clear. No acute cardiopulmonary process.")["No Finding"] == 1
    assert label_report("Heart size normal. No effusion or pneumothorax.")["No Finding"] == 1
    # an uncertain finding is not a normal study
    assert label_report("Possible left basilar atelectasis.")["No Finding"] is None
    # deliberate differences from CheXpert: devices and other abnormalities count
    assert label_report("Lungs clear. Stable support devices.")["No Finding"] is None
    assert label_report("Lungs clear. Dextroscoliosis of the spine.")["No Finding"] is None
    assert label_report("Lungs clear. No scoliosis.")["No Finding"] == 1


def test_run_on_text_without_punctuation() -> None:
    # what a model trained on blip_caption text writes: no full stops
    text = "no pleural effusion mild cardiomegaly the lungs are otherwise clear"
    assert states(text) == {"Pleural Effusion": NEGATIVE, "Cardiomegaly": POSITIVE}
    text = "there is no pneumothorax there is a small left pleural effusion"
    assert states(text) == {"Pneumothorax": NEGATIVE, "Pleural Effusion": POSITIVE}
    text = "1 no acute disease 2 mild cardiomegaly"
    assert label_report(text)["Cardiomegaly"] == POSITIVE
    # a negated list stays negated
    labels = label_report("no focal consolidation pleural effusion or large pneumothorax")
    for obs in ("Consolidation", "Pleural Effusion", "Pneumothorax"):
        assert labels[obs] == NEGATIVE
    assert labels["No Finding"] == POSITIVE


def test_to_binary_definition() -> None:
    labels = label_report("Mild cardiomegaly. No effusion. Possible pneumonia.")
    binary = to_binary(labels)
    assert tuple(binary) == CHEXPERT_OBSERVATIONS
    assert binary["Cardiomegaly"] == 1
    assert binary["Pleural Effusion"] == 0  # negative
    assert binary["Pneumonia"] == 0  # uncertain
    assert binary["Edema"] == 0  # blank
    with pytest.raises(KeyError, match="Cardiomegaly"):
        to_binary({"Edema": 1})


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="report string"):
        label_report(None)  # type: ignore[arg-type]
    # an empty report states nothing: not even a normal study
    assert all(v is None for v in label_report("").values())
    assert all(v is None for v in label_report(" .\n").values())
    assert len(label_reports(["a", "b"])) == 2


def test_phantom_reports_are_labelled_as_drawn() -> None:
    """The phantom data set's reports (xraygpt.data.phantom.generator) against their labels."""
    phantom = pytest.importorskip("xraygpt.data.phantom.generator")
    observations = PHANTOM_OBSERVATIONS
    tp = dict.fromkeys(observations, 0)
    fp = dict.fromkeys(observations, 0)
    fn = dict.fromkeys(observations, 0)
    for index in range(400):
        rng = np.random.default_rng([0, index])
        case = phantom.sample_case(rng)
        truth = case.labels()
        predicted = to_binary(label_report(phantom.write_report(case, rng)))
        for obs in observations:
            tp[obs] += predicted[obs] and truth[obs]
            fp[obs] += predicted[obs] and not truth[obs]
            fn[obs] += truth[obs] and not predicted[obs]
    f1 = [2 * tp[o] / (2 * tp[o] + fp[o] + fn[o]) for o in observations]
    assert sum(f1) / len(f1) >= 0.95, dict(zip(observations, f1, strict=True))
