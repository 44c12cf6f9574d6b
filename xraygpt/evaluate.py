"""Score an existing predictions file, with no model: the same scorer for any system.

    python -m xraygpt.evaluate --predictions output/xraygpt_eval/predictions.jsonl
    python -m xraygpt.evaluate --predictions mine.jsonl --out results/mine --no-meteor

The file is JSON lines with at least ``image_id``, ``generated`` and
``reference`` per line (optional ``baselines``: ``{name: report}``), as
``test.py`` writes it (see :mod:`xraygpt.metrics.scoring`). Writes
``<out>/metrics.json`` (default: next to the predictions file) and prints the
table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m xraygpt.evaluate",
        description="Score a predictions file (JSON lines: image_id, generated, reference).",
    )
    parser.add_argument("--predictions", required=True, help="the predictions .jsonl file")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json (default: the predictions file's folder)",
    )
    parser.add_argument(
        "--no-meteor",
        action="store_true",
        help="skip METEOR (its Java process takes up to a minute to start)",
    )
    parser.add_argument(
        "--no-java",
        action="store_true",
        help="use the pure-Python tokenizer instead of the Java PTB tokenizer (METEOR is then skipped)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xraygpt.common.io import atomic_write_json
    from xraygpt.metrics.scoring import (
        PredictionsError,
        format_table,
        read_predictions,
        score_records,
    )

    path = Path(args.predictions)
    out_dir = Path(args.out) if args.out else path.parent
    try:
        records = read_predictions(path)
    except (FileNotFoundError, PredictionsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metrics = score_records(
        records,
        meteor=not (args.no_meteor or args.no_java),
        use_java=False if args.no_java else None,
        run_info={"predictions": str(path)},
    )
    if args.no_java:
        metrics["skipped"]["METEOR"] = "needs Java, which --no-java turned off"
    out = out_dir / "metrics.json"
    atomic_write_json(metrics, out)
    print(format_table(metrics))
    print(f"metrics written to {out}")
    return 0


if __name__ == "__main__":
    from xraygpt.common.errors import run_main

    sys.exit(run_main(main))
