"""Conversations written from a phantom case: answers follow the case, phrasings held out."""

import random
import re

import pytest

from xraygpt.common.constants import PHANTOM_OBSERVATIONS
from xraygpt.conversation.templates import IMAGE_MESSAGE
from xraygpt.data.phantom.generator import case_record, make_sample
from xraygpt.data.phantom.questions import (
    CANNOT_TELL,
    FINDING_FIELDS,
    QUESTIONS,
    case_findings,
    finding_answer,
    make_conversation,
    read_yes_no,
)

CASE = {
    "cardiomegaly": None,
    "effusion": ["left", "small"],
    "pneumothorax": None,
    "consolidation": ["right", "lower"],
    "lesion": ["mass", "left", "upper", 4.4],
    "devices": ["pacemaker"],
}


def test_yes_no_answers_follow_the_case():
    present = case_findings(CASE)
    assert not present["No Finding"] and present["Pleural Effusion"] and not present["Cardiomegaly"]
    for obs in PHANTOM_OBSERVATIONS:
        assert read_yes_no(finding_answer(CASE, obs)) == int(present[obs]), obs
    assert (
        finding_answer(CASE, "Pleural Effusion") == "Yes. There is a small left pleural effusion."
    )
    assert "4.4 cm mass in the left upper lung" in finding_answer(CASE, "Lung Lesion")
    normal = {key: None for key in FINDING_FIELDS.values()} | {"devices": []}
    assert finding_answer(normal, "No Finding").startswith("Yes.")


def test_the_recorded_case_is_the_drawn_one():
    for index in range(30):
        _, _, labels = make_sample(0, index, size=32)
        present = case_findings(case_record(0, index))
        assert {obs: int(present[obs]) for obs in PHANTOM_OBSERVATIONS} == {
            obs: labels[obs] for obs in PHANTOM_OBSERVATIONS
        }


def test_a_conversation_opens_with_the_image_and_answers_from_the_case():
    rng = random.Random(0)
    report = "Findings: a report. Impression: as drawn."
    seen_cannot_tell = False
    for _ in range(50):
        pairs = make_conversation(CASE, report, rng)
        assert pairs[0][0].startswith(IMAGE_MESSAGE + " ")
        assert sum(IMAGE_MESSAGE in q for q, _ in pairs) == 1
        for question, answer in pairs:
            if answer == CANNOT_TELL:
                seen_cannot_tell = True
                assert (
                    question.removeprefix(IMAGE_MESSAGE + " ") in QUESTIONS["cannot_tell"]["train"]
                )
    assert seen_cannot_tell


@pytest.mark.parametrize("phrasing", ["train", "held_out"])
def test_held_out_phrasings_never_appear_in_training_conversations(phrasing):
    rng = random.Random(1)
    held = {q for kind in QUESTIONS.values() for q in kind["held_out"]}
    train = {q for kind in QUESTIONS.values() for q in kind["train"]}
    assert not held & train
    questions = [
        q.removeprefix(IMAGE_MESSAGE + " ")
        for _ in range(200)
        for q, _ in make_conversation(CASE, "Findings: x.", rng, phrasing=phrasing)
    ]
    frames = [
        re.compile("^" + ".+".join(map(re.escape, f.split("{}"))) + "$")
        for f in QUESTIONS["finding"]["held_out"]
    ]
    uses_held_out = [q for q in questions if q in held or any(f.match(q) for f in frames)]
    if phrasing == "train":
        assert not uses_held_out
    else:
        assert uses_held_out


def test_the_yes_no_rule_reads_the_first_word_only():
    assert read_yes_no("Yes. There is a small effusion.") == 1
    assert read_yes_no("  no, there is none") == 0
    assert read_yes_no("There is no effusion.") is None
    assert read_yes_no("Nodule in the left lung.") is None
    assert read_yes_no("") is None
