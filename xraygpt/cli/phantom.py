"""``xraygpt phantom``: generate the phantom data set of the embedded default.

    xraygpt phantom --out dataset/phantom --n 3000 --seed 0

SYNTHETIC drawings of frontal chest radiographs with known findings, their
reports, conversations and tokenizer (:mod:`xraygpt.data.phantom.generator`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from xraygpt.data.phantom.generator import DEFAULT_SIZE, DEFAULT_SPLITS, generate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt phantom",
        description="Generate the phantom chest radiograph data set (synthetic images, reports, labels).",
    )
    parser.add_argument("--out", default="dataset/phantom", help="output folder (OpenI layout)")
    parser.add_argument("--n", type=int, default=3000, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="image side in pixels")
    parser.add_argument(
        "--splits",
        type=float,
        nargs=3,
        default=list(DEFAULT_SPLITS),
        metavar=("TRAIN", "VAL", "TEST"),
        help="split fractions",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes drawing images (the output does not depend on it)",
    )
    args = parser.parse_args(argv)
    try:
        path = generate(args.out, args.n, args.seed, args.size, args.splits, workers=args.workers)
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.n} phantoms to {path.parent} (annotations: {path})")
    return 0
