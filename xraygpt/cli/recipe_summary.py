"""``xraygpt recipe-summary``: the tiny recipe's results, as the quickstart prints them.

    xraygpt recipe-summary --output output --data dataset/phantom

See :mod:`xraygpt.eval.recipe_summary`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from xraygpt.components import register_components
from xraygpt.eval.recipe_summary import format_summary, summarize


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt recipe-summary", description="The tiny recipe's results table."
    )
    parser.add_argument("--output", default="output", help="run.output_dir of the stages")
    parser.add_argument("--data", default="dataset/phantom", help="the phantom data folder")
    parser.add_argument(
        "--no-losses", action="store_true", help="skip the held-out losses and encoder scores"
    )
    args = parser.parse_args(argv)
    register_components()  # the held-out losses build the stages' configs
    print(format_summary(summarize(args.output, args.data, losses=not args.no_losses)))
    return 0
