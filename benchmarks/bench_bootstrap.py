"""Seconds for bootstrap intervals and a paired comparison over a MIMIC-CXR-size test set.

    python benchmarks/bench_bootstrap.py [--n 3858] [--resamples 1000] [--repeats 3]

References: the first ``--n`` OpenI reports with text (the archive that ships
with torchxrayvision; 3,858 is MIMIC-CXR's test size); "generated" reports:
each image given the report of the next one, so that every metric varies.
Timed separately, best of ``--repeats``:

- ``statistics``: the per-report sufficient statistics of one system (ROUGE
  and CIDEr per report, BLEU n-gram counts, labeler counts), computed once;
- ``intervals``: ``--resamples`` resamples of every metric (the vectorised
  part the issue's 10 s target is about);
- ``paired``: a paired comparison of two systems on the same resamples.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import report

from xraygpt.common.errors import run_main
from xraygpt.data.labeler import label_report
from xraygpt.data.openi import read_openi_reports as read_reports
from xraygpt.eval.metrics import bootstrap as boot
from xraygpt.eval.metrics.nlg import tokenize_texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3858, help="reports (default: MIMIC-CXR test)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    texts = [r.text for r in read_reports() if r.text]
    if len(texts) < args.n + 1:
        raise SystemExit(f"--n {args.n}: the OpenI archive has only {len(texts)} reports with text")
    references, generated = texts[: args.n], texts[1 : args.n + 1]
    tokens, note = tokenize_texts([*generated, *references], use_java=False)
    labels = {t: label_report(t) for t in dict.fromkeys([*generated, *references])}

    def statistics(system: list[str]) -> boot.ReportStats:
        return boot.report_statistics(
            system, references, tokens, [labels[t] for t in system], [labels[t] for t in references]
        )

    started = time.perf_counter()
    stats = statistics(generated)
    stats_seconds = time.perf_counter() - started
    copy = statistics(references)

    def best(fn) -> float:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    intervals = best(lambda: boot.confidence_intervals(stats, args.resamples, args.seed))
    paired = best(lambda: boot.paired_comparison(copy, stats, args.resamples, args.seed))
    ci = boot.confidence_intervals(stats, args.resamples, args.seed)
    point = boot.point_values(stats)
    rows = [
        {"step": "statistics (once per system)", "seconds": stats_seconds},
        {"step": f"intervals, {args.resamples} resamples", "seconds": intervals},
        {"step": f"paired comparison, {args.resamples} resamples", "seconds": paired},
    ]
    shown = ("ROUGE-L", "BLEU-4", "CIDEr", "ce14_uncertain0_micro")
    report(
        "bootstrap",
        vars(args),
        rows,
        {
            "metrics": len(ci),
            "tokenizer": note,
            "example": {k: boot.format_ci(point[k], ci[k]) for k in shown},
            "mean_width": float(np.mean([hi - lo for lo, hi in ci.values()])),
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
