"""Radiology conversations from prepared reports (``xraygpt conversations from-reports``).

:func:`write_report_conversations` writes one conversation per report of the chosen split, in
the FastChat / ShareGPT layout: a request for the report answered by the
report, then questions about the CheXpert observations the report states,
answered from the project's rule-based labeler (positive: yes; negative: no;
uncertain: "possibly"; an observation the report does not mention is not
asked about). Each question and answer is drawn from several phrasings, seeded
per report.

This is a stand-in, built from the reports alone, for the ~30k radiology
conversations XrayGPT's authors generated from MIMIC-CXR / OpenI reports with
a GPT model (and the ~100k real patient–doctor ones), which are not
distributed with this project: conversation files of that kind, in the same
layout, load as they are (``datasets.conversations.files``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.common.errors import DataError
from xraygpt.common.io import atomic_write_json
from xraygpt.data.annotations import load_annotations
from xraygpt.data.labeler import NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN, label_report

REPORT_REQUESTS = (
    "Describe the given chest x-ray image in detail.",
    "Please write the radiology report for this chest x-ray.",
    "What are the findings and the impression of this chest radiograph?",
    "Could you summarise what this chest x-ray shows?",
    "Write a detailed report of this chest x-ray.",
)

# How an observation is named: with its article (questions, "yes" and "possibly" answers)
# and bare (after "no").
OBSERVATION_PHRASES = {
    "Enlarged Cardiomediastinum": ("an enlarged cardiomediastinum", "enlarged cardiomediastinum"),
    "Cardiomegaly": ("cardiomegaly (an enlarged heart)", "cardiomegaly"),
    "Lung Opacity": ("a lung opacity", "lung opacity"),
    "Lung Lesion": ("a lung lesion such as a nodule or mass", "lung nodule or mass"),
    "Edema": ("pulmonary edema", "pulmonary edema"),
    "Consolidation": ("consolidation", "consolidation"),
    "Pneumonia": ("pneumonia", "pneumonia"),
    "Atelectasis": ("atelectasis", "atelectasis"),
    "Pneumothorax": ("a pneumothorax", "pneumothorax"),
    "Pleural Effusion": ("a pleural effusion", "pleural effusion"),
    "Pleural Other": (
        "another pleural abnormality, such as thickening",
        "other pleural abnormality",
    ),
    "Fracture": ("a fracture", "fracture"),
    "Support Devices": ("a support device, such as a tube, line or pacemaker", "support device"),
}
QUESTIONS = (
    "Is there {obs}?",
    "Does the x-ray show {obs}?",
    "Do you see any sign of {obs}?",
    "Can you tell me whether there is {obs}?",
)
ANSWERS = {
    POSITIVE: (
        "Yes, there is {obs}.",
        "Yes, the report describes {obs}.",
        "Yes: {obs} is present.",
    ),
    NEGATIVE: (
        "No, there is no {bare}.",
        "No, the report finds no {bare}.",
        "No sign of {bare} is seen.",
    ),
    UNCERTAIN: (
        "Possibly: the report mentions {obs} without being certain.",
        "There is possibly {obs}; it cannot be confirmed or excluded.",
        "Possibly; {obs} is suspected but not certain.",
    ),
}
NORMAL_QUESTIONS = (
    "Is this a normal chest x-ray?",
    "Are there any abnormal findings?",
    "Is everything normal on this scan?",
)
NORMAL_ANSWERS = (
    "Yes, this is a normal study: no abnormality is reported.",
    "The study is normal; no abnormal finding is described.",
)

# Observations asked about per conversation at most (the rest of the report's labels are
# left for other phrasings of other reports; long conversations would only be truncated).
DEFAULT_MAX_QUESTIONS = 6


def report_conversation(
    report: str,
    conv_id: str,
    seed: int = 0,
    max_questions: int = DEFAULT_MAX_QUESTIONS,
    answer_style: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """One ShareGPT-layout conversation about ``report`` (see the module docstring).

    ``answer_style`` rewrites every answer (e.g. the image stages' caption
    processing); the labels are read from the report as written.
    """
    rng = random.Random(zlib.crc32(f"{seed}:{conv_id}".encode()))
    turns = [
        {"from": "human", "value": rng.choice(REPORT_REQUESTS)},
        {"from": "gpt", "value": report.strip()},
    ]
    labels = label_report(report)
    asked = [obs for obs in CHEXPERT_OBSERVATIONS if obs != NO_FINDING and labels[obs] is not None]
    rng.shuffle(asked)
    qa: list[tuple[str, str]] = []
    if labels[NO_FINDING] == POSITIVE:
        qa.append((rng.choice(NORMAL_QUESTIONS), rng.choice(NORMAL_ANSWERS)))
    for obs in asked[: max(0, max_questions - len(qa))]:
        phrase, bare = OBSERVATION_PHRASES[obs]
        answer = rng.choice(ANSWERS[labels[obs]]).format(obs=phrase, bare=bare)
        qa.append((rng.choice(QUESTIONS).format(obs=phrase), answer[0].upper() + answer[1:]))
    for question, answer in qa:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    if answer_style is not None:
        for item in turns:
            if item["from"] == "gpt":
                item["value"] = answer_style(item["value"])
    return {"id": conv_id, "conversations": turns}


def write_report_conversations(
    annotations: str | Path,
    out: str | Path,
    *,
    splits: Sequence[str] = ("train",),
    seed: int = 0,
    max_questions: int = DEFAULT_MAX_QUESTIONS,
    caption_style: bool = False,
    max_words: int = 120,
    progress: bool = True,
) -> tuple[int, int]:
    """One conversation per report of ``splits`` of a ``filter_cap.json``, written to ``out``
    (ShareGPT layout); (conversations, turns).

    ``caption_style`` writes the answers as the image stages' ``blip_caption``
    processor shows reports to the LLM (lower case, no punctuation, ``max_words``).
    """
    entries = [e for e in load_annotations(annotations) if e.split in splits]
    if not entries:
        raise DataError(f"{annotations} has no entry in split(s) {list(splits)}")
    style = None
    if caption_style:
        from xraygpt.processors.blip_processors import BlipCaptionProcessor

        style = BlipCaptionProcessor(max_words=max_words)
    conversations, seen = [], set()
    for entry in tqdm(entries, desc="conversations", unit="report", disable=not progress):
        conv_id = entry.report_id or entry.image_id
        if conv_id in seen:  # several images of one report: one conversation
            continue
        seen.add(conv_id)
        conversations.append(
            report_conversation(entry.caption, conv_id, seed, max_questions, style)
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(conversations, out)
    return len(conversations), sum(len(c["conversations"]) for c in conversations)
