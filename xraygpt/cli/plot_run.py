"""``xraygpt plot-run``: training curves of run folders (their ``log.jsonl``).

    xraygpt plot-run output/xraygpt_tiny_stage1
    xraygpt plot-run output/xraygpt_tiny_stage1 output/xraygpt_tiny_stage2

Writes ``<run>/training_curves.png`` (:mod:`xraygpt.train.plots`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from xraygpt.train.plots import PICTURE_NAME, RunLogError, plot_run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt plot-run",
        description="Draw loss, learning rate and throughput of run folders (their log.jsonl).",
    )
    parser.add_argument("runs", nargs="+", help="run folder(s): output/<job>")
    parser.add_argument(
        "--out", default=None, help=f"picture path (one run only; default <run>/{PICTURE_NAME})"
    )
    args = parser.parse_args(argv)
    if args.out and len(args.runs) > 1:
        parser.error("--out takes one run folder; without it each picture goes into its folder")
    status = 0
    for run in args.runs:
        try:
            print(f"{run}: {plot_run(run, args.out)}")
        except RunLogError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
    return status
