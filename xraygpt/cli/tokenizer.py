"""``xraygpt tokenizer``: rebuild the tiny model's tokenizer, a LLaMA-style BPE of report text.

    xraygpt tokenizer            # writes the shipped folder, xraygpt/models/assets/tiny_tokenizer/
    xraygpt tokenizer --out DIR  # somewhere else

The tiny ``mini_gpt4`` runs with nothing downloaded, so it ships its own
tokenizer; this is how that folder was made (:mod:`xraygpt.data.tokenizer`). The
layout copies LLaMA's so that the model code cannot tell the two apart: ``<unk>``
0, ``<s>`` 1, ``</s>`` 2, the 256 byte tokens ``<0x00>``..``<0xFF>`` at 3..258,
then the learned pieces; the pad token is ``</s>``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from xraygpt.data.tokenizer import TINY_TOKENIZER_OUT, TINY_VOCAB, build_tiny_tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt tokenizer", description="Rebuild the tiny model's tokenizer."
    )
    parser.add_argument(
        "--reports", type=Path, default=None, help="NLMCXR_reports.tgz (default: torchxrayvision's)"
    )
    parser.add_argument("--out", type=Path, default=TINY_TOKENIZER_OUT)
    parser.add_argument("--vocab-size", type=int, default=TINY_VOCAB)
    args = parser.parse_args(argv)
    out = build_tiny_tokenizer(args.reports, args.vocab_size, args.out)
    size = len(json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    print(f"wrote {out} ({size} tokens)")
    return 0
