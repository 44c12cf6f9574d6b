"""Conversations about a phantom case: questions, the answers its drawing implies, the yes/no rule.

The phantom generator (``xraygpt.data.phantom.generator``) records what each image shows
(its *case*: a JSON mapping, see :func:`case_findings`); from it this module
writes multi-turn conversations in the XrayGPT template: a report request
answered by the report, questions about each finding the phantoms can show
(present? which side? how large?), about devices, "is this normal?", and
questions the image cannot answer (history, treatment, what to do next), which
get one fixed honest sentence, :data:`CANNOT_TELL`.

Every question kind has two sets of phrasings: ``train`` (used in the
training and validation conversations) and ``held_out`` (never in training;
the chat evaluation of the test split asks these), so the evaluation measures
whether the model understood the question rather than memorised its wording.

Yes/no answers open with ``Yes.`` or ``No.``; :func:`read_yes_no` is the
rule the evaluation uses to read them back.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from xraygpt.conversation.templates import IMAGE_MESSAGE

CANNOT_TELL = "The image alone cannot tell this; a clinician who knows the patient must decide."

#: The observation each case field stands for (PHANTOM_FINDINGS order).
FINDING_FIELDS = {
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "effusion",
    "Pneumothorax": "pneumothorax",
    "Consolidation": "consolidation",
    "Lung Lesion": "lesion",
    "Support Devices": "devices",
}
NORMAL = "No Finding"  # the observation "is this normal?" asks about

# How each finding is named in a question (any name in any frame).
_NAMES = {
    "Cardiomegaly": ("cardiomegaly", "an enlarged heart", "enlargement of the heart"),
    "Pleural Effusion": ("a pleural effusion", "pleural fluid", "an effusion"),
    "Pneumothorax": ("a pneumothorax", "a collapsed lung", "air in the pleural space"),
    "Consolidation": ("consolidation", "a consolidation", "airspace consolidation"),
    "Lung Lesion": ("a lung nodule", "a lung mass", "a nodule or mass", "a lung lesion"),
    "Support Devices": ("any tubes or lines", "a support device", "any medical devices"),
}

QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "finding": {
        "train": (
            "Is there {}?",
            "Do you see {}?",
            "Can you see {} on this image?",
            "Does this patient have {}?",
            "Is there evidence of {}?",
            "Any sign of {}?",
            "Is there {} on the x-ray?",
            "Do I have {}?",
            "Is {} present?",
            "Is {} seen?",
            "Does the x-ray show {}?",
            "Can you find {}?",
            "Has the patient got {}?",
            "Does the radiograph show {}?",
            "Would you report {}?",
            "Are you able to see {}?",
            "Is {} visible?",
            "Did you find {}?",
            "Could there be {}?",
            "Tell me, is there {}?",
            "Is {} shown in this image?",
            "Do we see {} on the film?",
            "Would you say the patient has {}?",
            "Is there any sign of {} here?",
        ),
        "held_out": (
            "Does the image show {}?",
            "Would you say there is {} here?",
            "Is {} visible on this radiograph?",
        ),
    },
    "normal": {
        "train": (
            "Is this x-ray normal?",
            "Is this a normal chest x-ray?",
            "Does this image look normal?",
            "Is everything normal?",
            "Is my chest x-ray normal?",
            "Is the study normal?",
            "Does everything look normal on this film?",
            "Is this radiograph normal?",
            "Would you say this x-ray is normal?",
            "Is the image normal?",
        ),
        "held_out": (
            "Would you call this radiograph normal?",
            "Is this chest film normal?",
        ),
    },
    "report": {
        "train": (
            "Describe the given chest x-ray image in detail.",
            "Could you describe the contents of this chest x-ray image for me?",
            "What are the findings and the impression of this chest x-ray image?",
            "Write a radiology report summary for this chest x-ray image.",
            "Please summarise the key findings in this chest x-ray image.",
            "What does this x-ray show?",
        ),
        "held_out": (
            "Take a look at this chest x-ray and describe the findings.",
            "Please write the report for this image.",
        ),
    },
    "cannot_tell": {
        "train": (
            "What should the patient do next?",
            "What is the patient's history?",
            "What treatment does the patient need?",
            "Should I be admitted to hospital?",
            "How old is the patient?",
            "What caused this?",
            "Which medication should I take?",
        ),
        "held_out": (
            "Is surgery needed?",
            "What happens next for this patient?",
        ),
    },
}

# Follow-up detail questions (train and held out alike: the evaluation does not ask them).
# They name no finding ("it"): a question that names one asks whether it is there.
_SIDE_QUESTIONS = (
    "Which side is it on?",
    "Which side, left or right?",
    "Which side?",
    "On which side is it?",
    "Left or right?",
)
_SIZE_QUESTIONS = ("How large is it?", "How big is it?", "How severe is it?", "What size is it?")
_DEVICE_QUESTIONS = ("Which devices are present?", "What tubes or lines do you see?", "Which ones?")
_WHERE_QUESTIONS = ("Where is it?", "Where exactly?", "Where is it located?")
# Training questions sometimes come with a few words around them, so that the model
# keys on what is asked rather than on one exact wording.
_LEADS = ("", "", "", "", "Doctor, ", "Please tell me: ", "One more question. ", "And ", "Okay. ")
_TAILS = ("", "", "", "", " Thanks.", " Please answer briefly.", " I am worried.")
# ... and sometimes a place before the question mark ("Is there X here?").
_PLACES = (" here", " on this image", " on the x-ray", " on this film", " in this study", " at all")

_NO_ANSWER = {
    "Cardiomegaly": "No. The heart size is normal.",
    "Pleural Effusion": "No. There is no pleural effusion.",
    "Pneumothorax": "No. There is no pneumothorax.",
    "Consolidation": "No. There is no focal consolidation.",
    "Lung Lesion": "No. There is no lung nodule or mass.",
    "Support Devices": "No. There are no tubes, lines or devices.",
}


def _get(case: Mapping[str, Any], key: str) -> Any:
    value = case.get(key)
    return list(value) if isinstance(value, list | tuple) else value


def case_findings(case: Mapping[str, Any]) -> dict[str, bool]:
    """Which observations a case shows (the six findings and ``No Finding``).

    ``case`` is what the generator records per image: ``cardiomegaly`` (grade
    or null), ``effusion`` ([right|left|bilateral, severity]), ``pneumothorax``
    ([side, severity]), ``consolidation`` ([side, lobe]), ``lesion`` ([nodule|mass,
    side, zone, size cm]) and ``devices`` (a list of names).
    """
    present = {obs: bool(_get(case, key)) for obs, key in FINDING_FIELDS.items()}
    present[NORMAL] = not any(present.values())
    return present


def _devices_phrase(devices: Sequence[str]) -> str:
    named = [f"{'an' if d[0] in 'aeiou' else 'a'} {d}" for d in devices]
    return " and ".join(named)


def describe(case: Mapping[str, Any], observation: str) -> str:
    """One sentence stating a present finding as drawn, e.g. 'There is a small left pleural effusion.'"""
    value = _get(case, FINDING_FIELDS[observation])
    if observation == "Cardiomegaly":
        return f"There is {value} cardiomegaly."
    if observation == "Pleural Effusion":
        where, severity = value
        if where == "bilateral":
            return f"There are {severity} bilateral pleural effusions."
        return f"There is a {severity} {where} pleural effusion."
    if observation == "Pneumothorax":
        side, severity = value
        return f"There is a {severity} {side} pneumothorax."
    if observation == "Consolidation":
        side, lobe = value
        return f"There is consolidation in the {side} {lobe} lobe."
    if observation == "Lung Lesion":
        kind, side, zone, size = value
        return f"There is a {size} cm {kind} in the {side} {zone} lung."
    return f"There is {_devices_phrase(value)}."


def finding_answer(case: Mapping[str, Any], observation: str) -> str:
    """The answer to "is there <observation>?" (or "is this normal?" for ``No Finding``)."""
    present = case_findings(case)
    if observation == NORMAL:
        if present[NORMAL]:
            return "Yes. No abnormality is seen."
        shown = [describe(case, obs) for obs in FINDING_FIELDS if present[obs]]
        return "No. " + " ".join(shown)
    if present[observation]:
        return "Yes. " + describe(case, observation)
    return _NO_ANSWER[observation]


def _detail(
    case: Mapping[str, Any], observation: str, rng: random.Random
) -> tuple[str, str] | None:
    """A follow-up about a present finding's side, size or place, and its answer."""
    value = _get(case, FINDING_FIELDS[observation])
    if not value:
        return None
    if observation == "Cardiomegaly":
        return rng.choice(_SIZE_QUESTIONS), f"The heart is {value}ly enlarged."
    if observation in ("Pleural Effusion", "Pneumothorax"):
        where, severity = value
        if rng.random() < 0.5:
            if where == "bilateral":
                return rng.choice(_SIDE_QUESTIONS), "There are effusions on both sides."
            return rng.choice(_SIDE_QUESTIONS), f"It is on the {where}."
        return rng.choice(_SIZE_QUESTIONS), f"It is {severity}."
    if observation == "Consolidation":
        side, lobe = value
        return rng.choice(_WHERE_QUESTIONS), f"It is in the {side} {lobe} lobe."
    if observation == "Lung Lesion":
        kind, side, zone, size = value
        if rng.random() < 0.5:
            return rng.choice(_SIZE_QUESTIONS), f"The {kind} measures {size} cm."
        return rng.choice(_WHERE_QUESTIONS), f"It is in the {side} {zone} lung."
    return rng.choice(_DEVICE_QUESTIONS), describe(case, observation)


def _dress(question: str, rng: random.Random, phrasing: str) -> str:
    """A training question, sometimes with a lead-in or a tail; held-out ones stay bare."""
    if phrasing != "train":
        return question
    if question.endswith("?") and rng.random() < 0.4:
        question = question[:-1] + rng.choice(_PLACES) + "?"
    lead = rng.choice(_LEADS)
    if lead == "And ":
        question = question[0].lower() + question[1:]
    return f"{lead}{question}{rng.choice(_TAILS)}"


def finding_question(observation: str, rng: random.Random, phrasing: str = "train") -> str:
    """A question asking whether ``observation`` is present (``No Finding``: is it normal?)."""
    if observation == NORMAL:
        return _dress(rng.choice(QUESTIONS["normal"][phrasing]), rng, phrasing)
    frame = rng.choice(QUESTIONS["finding"][phrasing])
    return _dress(frame.format(rng.choice(_NAMES[observation])), rng, phrasing)


def make_conversation(
    case: Mapping[str, Any],
    report: str,
    rng: random.Random,
    *,
    phrasing: str = "train",
    report_first: bool | None = None,
) -> list[tuple[str, str]]:
    """One multi-turn conversation about ``case``: ``[(human, gpt), ...]`` pairs.

    The first question carries the image (``<Img><ImageHere></Img> ...``, as
    the chat demo sends it). Yes and no are both common: present findings are
    asked about more often than absent ones, which far outnumber them.
    """
    if phrasing not in ("train", "held_out"):
        raise ValueError(f"phrasing must be 'train' or 'held_out', got {phrasing!r}")
    present = case_findings(case)
    if report_first is None:
        report_first = rng.random() < 0.5
    pairs: list[tuple[str, str]] = []
    if report_first:
        pairs.append((rng.choice(QUESTIONS["report"][phrasing]), report))
    asked = [obs for obs in FINDING_FIELDS if rng.random() < (0.8 if present[obs] else 0.5)]
    if rng.random() < 0.4:
        asked.append(NORMAL)
    rng.shuffle(asked)
    for obs in asked[:6]:
        pairs.append((finding_question(obs, rng, phrasing), finding_answer(case, obs)))
        detail = _detail(case, obs, rng) if obs != NORMAL and rng.random() < 0.35 else None
        if detail is not None:
            pairs.append(detail)
    if rng.random() < 0.25:
        at = rng.randint(1 if report_first else 0, len(pairs))
        pairs.insert(at, (rng.choice(QUESTIONS["cannot_tell"][phrasing]), CANNOT_TELL))
    if not report_first and rng.random() < 0.3:
        pairs.append((rng.choice(QUESTIONS["report"][phrasing]), report))
    if not pairs:  # nothing drawn was asked: ask one finding
        obs = rng.choice(list(FINDING_FIELDS))
        pairs.append((finding_question(obs, rng, phrasing), finding_answer(case, obs)))
    first_q, first_a = pairs[0]
    pairs[0] = (f"{IMAGE_MESSAGE} {first_q}", first_a)
    return pairs


def sharegpt_entry(
    conv_id: str, image_id: str, pairs: Sequence[tuple[str, str]], report_first: bool
) -> dict[str, Any]:
    """The FastChat / ShareGPT entry of a conversation (with its image, as LLaVA's files)."""
    turns = []
    for question, answer in pairs:
        turns.append({"from": "human", "value": question})
        turns.append({"from": "gpt", "value": answer})
    return {"id": conv_id, "image": image_id, "report_first": report_first, "conversations": turns}


_YES = re.compile(r"^\W*yes\b", re.IGNORECASE)
_NO = re.compile(r"^\W*no\b", re.IGNORECASE)


def read_yes_no(answer: str) -> int | None:
    """1 for yes, 0 for no, ``None`` when the answer gives neither.

    The rule: the answer's first word, ignoring leading punctuation and case,
    is ``yes`` (1) or ``no`` (0). Anything else ("There is a small effusion",
    a report) counts as no yes/no at all: the evaluation reports that share
    rather than guessing.
    """
    if _YES.match(answer):
        return 1
    if _NO.match(answer):
        return 0
    return None
