"""``xraygpt score``: score an existing predictions file, with no model: the same scorer for any system.

    xraygpt score --predictions output/xraygpt_eval/predictions.jsonl
    xraygpt score --predictions mine.jsonl --out results/mine --no-meteor
    xraygpt score --predictions A.jsonl --compare B.jsonl
    xraygpt score --predictions A.jsonl --compare baseline:most_frequent

The file is JSON lines with at least ``image_id``, ``generated`` and
``reference`` per line (optional ``baselines``: ``{name: report}``), as
``xraygpt evaluate`` (test.py) writes it (see :mod:`xraygpt.eval.metrics.scoring`). Writes
``<out>/metrics.json`` and ``<out>/metrics.png`` (default: next to the predictions file) with 95 %
bootstrap intervals (``--bootstrap N`` resamples, 0 = none) and prints the
table and where it wrote. A ``metrics.json`` there that ``xraygpt score`` did not
write, such as the one test.py wrote with the predictions, is kept as it is: the
new scores go to ``metrics_rescored.json`` and ``metrics_rescored.png`` beside it,
and carry test.py's ``run`` block (config, checkpoint, generation settings) and
``skipped_images``. ``--compare`` scores the difference A - B of two systems over the
images both files hold (paired bootstrap: interval and two-sided p-value) and
writes ``<out>/compare.json`` instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xraygpt score",
        description="Score a predictions file (JSON lines: image_id, generated, reference). "
        "Writes metrics.json and metrics.png; beside a metrics.json that xraygpt score did not "
        "write (test.py's), it keeps that one and writes metrics_rescored.json and "
        "metrics_rescored.png, with test.py's run block and skipped_images.",
    )
    parser.add_argument("--predictions", required=True, help="the predictions .jsonl file")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json, or metrics_rescored.json beside a metrics.json that "
        "xraygpt score did not write (default: the predictions file's folder)",
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
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for the 95%% intervals (default 1000; 0 = no intervals)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also print every clinical-efficacy variant (all are in metrics.json)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="B.jsonl",
        help="compare --predictions (A) with this predictions file (B), or with a baseline "
        "stored in A: baseline:most_frequent",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xraygpt.common.errors import UsageError
    from xraygpt.eval.metrics.scoring import format_table, read_predictions, rescore_predictions

    path = Path(args.predictions)
    out_dir = Path(args.out) if args.out else path.parent
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap {args.bootstrap}: must be >= 0 (0 = off)")
    if args.compare and args.bootstrap < 1:
        raise UsageError(f"--compare needs --bootstrap >= 1 resamples, got {args.bootstrap}")
    # A missing or bad file raises the project's error: run_main prints it (--debug: traceback).
    if args.compare:
        return _compare(args, path, read_predictions(path), out_dir)
    result = rescore_predictions(
        path,
        out_dir,
        meteor=not (args.no_meteor or args.no_java),
        use_java=False if args.no_java else None,
        bootstrap=args.bootstrap,
        seed=args.seed,
        skipped={"METEOR": "needs Java, which --no-java turned off"} if args.no_java else None,
    )
    print(format_table(result.metrics))
    if args.variants:
        from xraygpt.eval.metrics.scoring import format_variant_table

        print(format_variant_table(result.metrics))
    print(
        f"metrics written to {result.metrics_path}, the per-observation picture to "
        f"{result.picture_path}"
    )
    if result.kept:
        print(f"{result.kept}, which xraygpt score did not write, is kept as it was")
    return 0


def _compare(args: argparse.Namespace, path: Path, records: list, out_dir: Path) -> int:
    from xraygpt.common.io import atomic_write_json
    from xraygpt.eval.metrics.compare import (
        BASELINE_PREFIX,
        baseline_records,
        compare_records,
        format_comparison,
    )
    from xraygpt.eval.metrics.scoring import read_predictions

    if args.compare.startswith(BASELINE_PREFIX):
        name = args.compare[len(BASELINE_PREFIX) :]
        other, b_name = baseline_records(records, name, str(path)), f"{path} baseline {name}"
    else:
        other, b_name = read_predictions(args.compare), str(args.compare)
    result = compare_records(
        records,
        other,
        a_name=str(path),
        b_name=b_name,
        resamples=args.bootstrap,
        seed=args.seed,
        use_java=False if args.no_java else None,
    )
    out = out_dir / "compare.json"
    atomic_write_json(result, out)
    print(format_comparison(result))
    print(f"comparison written to {out}")
    return 0
