"""``xraygpt conversations``: radiology conversations from reports, and the held-out loss.

    xraygpt conversations from-reports \\
        --annotations dataset/mimic/filter_cap.json --out dataset/conversations/radiology_train.json
    xraygpt conversations loss --cfg-path train_configs/xraygpt_tiny_sft.yaml \\
        [--ckpt output/xraygpt_tiny_sft/checkpoint_last.pth] [--split val]

``from-reports``: :mod:`xraygpt.data.report_conversations`; ``loss`` prints the
token-weighted mean cross-entropy over the assistant tokens of a split, for the
config's LLM before training and, with ``--ckpt``, after it
(:mod:`xraygpt.eval.conversation_loss`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from xraygpt.data.annotations import SPLITS
from xraygpt.data.report_conversations import DEFAULT_MAX_QUESTIONS, write_report_conversations


def _from_reports(args: argparse.Namespace) -> int:
    n, turns = write_report_conversations(
        args.annotations,
        args.out,
        splits=args.split,
        seed=args.seed,
        max_questions=args.max_questions,
        caption_style=args.caption_style,
        max_words=args.max_words,
        progress=args.progress,
    )
    print(f"wrote {n} conversations ({turns} turns) to {args.out}")
    return 0


def _loss(args: argparse.Namespace) -> int:
    # Workflow imports only here: from-reports needs no torch model.
    from xraygpt.components import register_components
    from xraygpt.eval.conversation_loss import held_out_loss

    register_components()
    results = held_out_loss(args.cfg_path, args.options, ckpt=args.ckpt, split=args.split)
    print(json.dumps({"assistant_token_loss_nats": results}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt conversations",
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
    make.set_defaults(run=_from_reports)
    loss = sub.add_parser(
        "loss", help="held-out assistant-token loss of a config's LLM, untuned and tuned"
    )
    loss.add_argument("--cfg-path", required=True)
    loss.add_argument("--ckpt", help="a checkpoint of the run (its trainable weights)")
    loss.add_argument("--split", default="val")
    loss.add_argument("--options", nargs="+", default=None, help="key=value overrides")
    loss.set_defaults(run=_loss)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
