"""Radiology conversations from prepared reports, and the held-out loss of a fine-tuned LLM.

    python -m xraygpt.tools.conversations from-reports \\
        --annotations dataset/mimic/filter_cap.json --out dataset/conversations/radiology_train.json
    python -m xraygpt.tools.conversations loss --cfg-path train_configs/xraygpt_tiny_sft.yaml \\
        [--ckpt output/xraygpt_tiny_sft/checkpoint_last.pth] [--split val]

``from-reports`` writes one conversation per report of the chosen split, in
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

``loss`` prints the token-weighted mean cross-entropy over the assistant
tokens of a split, for the config's LLM before training and, with
``--ckpt``, after it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.common.io import atomic_write_json
from xraygpt.data.annotations import SPLITS, load_annotations
from xraygpt.eval.metrics.labeler import NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN, label_report

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


def from_reports(args: argparse.Namespace) -> int:
    entries = [e for e in load_annotations(args.annotations) if e.split in args.split]
    if not entries:
        print(f"error: {args.annotations} has no entry in split(s) {args.split}", file=sys.stderr)
        return 2
    style = None
    if args.caption_style:
        from xraygpt.processors.blip_processors import BlipCaptionProcessor

        style = BlipCaptionProcessor(max_words=args.max_words)
    conversations, seen = [], set()
    for entry in tqdm(entries, desc="conversations", unit="report", disable=not args.progress):
        conv_id = entry.report_id or entry.image_id
        if conv_id in seen:  # several images of one report: one conversation
            continue
        seen.add(conv_id)
        conversations.append(
            report_conversation(entry.caption, conv_id, args.seed, args.max_questions, style)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(conversations, args.out)
    turns = sum(len(c["conversations"]) for c in conversations)
    print(f"wrote {len(conversations)} conversations ({turns} turns) to {args.out}")
    return 0


def held_out_loss(args: argparse.Namespace) -> int:
    # Workflow imports only here: from-reports needs no torch model.
    import xraygpt.train  # noqa: F401 - registers every component
    from xraygpt.common.config import Config
    from xraygpt.common.io import load_checkpoint
    from xraygpt.common.launch import seed_everything
    from xraygpt.common.registry import registry
    from xraygpt.train.checkpoint import load_trainable_state_dict
    from xraygpt.train.tasks.conversation_sft import evaluate_answer_loss

    cfg = Config(args.cfg_path, args.options)
    seed_everything(cfg.run_cfg.seed, 0)
    task = registry.get_task_class(cfg.run_cfg.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg)
    results = {}
    for name, by_split in datasets.items():
        if args.split not in by_split:
            print(f"error: datasets.{name} has no split {args.split!r}", file=sys.stderr)
            return 2
        results[f"{name}/{args.split} untuned"] = evaluate_answer_loss(model, by_split[args.split])
    if args.ckpt:
        ckpt = load_checkpoint(args.ckpt, "--ckpt")
        load_trainable_state_dict(model, ckpt.get("model", ckpt), str(args.ckpt))
        for name, by_split in datasets.items():
            results[f"{name}/{args.split} tuned"] = evaluate_answer_loss(
                model, by_split[args.split]
            )
    print(json.dumps({"assistant_token_loss_nats": results}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xraygpt.tools.conversations",
        description="Radiology conversations from reports; held-out loss of an SFT run.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser(
        "from-reports",
        help="write ShareGPT-layout conversations from a prepared filter_cap.json",
    )
    make.add_argument("--annotations", type=Path, required=True, help="a filter_cap.json")
    make.add_argument("--out", type=Path, required=True, help="the conversation file to write")
    make.add_argument(
        "--split", nargs="+", default=["train"], choices=SPLITS, help="report split(s) to use"
    )
    make.add_argument("--seed", type=int, default=0, help="seeds the phrasings")
    make.add_argument(
        "--max-questions",
        type=int,
        default=DEFAULT_MAX_QUESTIONS,
        help="observation questions per conversation at most",
    )
    make.add_argument(
        "--caption-style",
        action="store_true",
        help="write the answers as the image stages' blip_caption processor shows reports to "
        "the LLM (lowercase, no punctuation), so the tuned LLM writes in the style those "
        "stages train",
    )
    make.add_argument(
        "--max-words", type=int, default=120, help="with --caption-style: words kept per answer"
    )
    make.add_argument("--no-progress", dest="progress", action="store_false")
    make.set_defaults(run=from_reports)
    loss = sub.add_parser(
        "loss", help="held-out assistant-token loss of a config's LLM, untuned and tuned"
    )
    loss.add_argument("--cfg-path", required=True)
    loss.add_argument("--ckpt", help="a checkpoint of the run (its trainable weights)")
    loss.add_argument("--split", default="val")
    loss.add_argument("--options", nargs="+", default=None, help="key=value overrides")
    loss.set_defaults(run=held_out_loss)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from xraygpt.common.errors import run_main

    sys.exit(run_main(main))
