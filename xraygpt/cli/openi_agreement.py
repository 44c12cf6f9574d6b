"""``xraygpt openi-agreement``: the rule labeler against OpenI's MeSH tags.

    xraygpt openi-agreement [--archive NLMCXR_reports.tgz]

See :mod:`xraygpt.eval.openi_agreement`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from xraygpt.data.openi import ARCHIVE_NAME, read_openi_reports
from xraygpt.eval.openi_agreement import agreement, format_table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt openi-agreement", description="The rule labeler against OpenI's MeSH tags."
    )
    parser.add_argument(
        "--archive", default=None, help=f"path to {ARCHIVE_NAME} (default: torchxrayvision's copy)"
    )
    args = parser.parse_args(argv)
    print(format_table(agreement(read_openi_reports(args.archive))))
    return 0
