"""``xraygpt prepare openi|mimic``: the raw downloads as ``filter_cap.json`` plus resized images.

    xraygpt prepare openi --reports NLMCXR_reports.tgz --images NLMCXR_png/ --out dataset/openi
    xraygpt prepare mimic --reports mimic-cxr-reports.zip --images <mimic-cxr-jpg root> \\
        --split-csv mimic-cxr-2.0.0-split.csv.gz --out dataset/mimic

The work is :mod:`xraygpt.data.prepare` (see dataset/README.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from xraygpt.common.errors import DataError, MissingFileError
from xraygpt.data.prepare import (
    DEFAULT_MAX_SIDE,
    DEFAULT_VIEWS,
    NO_VIEW,
    format_stats,
    prepare_mimic,
    prepare_openi,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xraygpt prepare",
        description="Turn raw MIMIC-CXR / OpenI downloads into filter_cap.json and resized images.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--images", type=Path, help="raw image folder; images are copied when given"
    )
    common.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        help="longer side of the copied images in pixels (0: copy unchanged; default %(default)s)",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes resizing images (default %(default)s)",
    )
    openi = sub.add_parser("openi", parents=[common], help="OpenI / Indiana University CXR")
    openi.add_argument(
        "--reports", type=Path, required=True, help="NLMCXR_reports.tgz or its folder"
    )
    openi.add_argument("--out", type=Path, default=Path("dataset/openi"))
    openi.add_argument("--seed", type=int, default=42, help="seed of the split by report")
    openi.add_argument("--val-fraction", type=float, default=0.05)
    openi.add_argument(
        "--test-fraction",
        type=float,
        default=0.05,
        help="(0 and 0 put every report in train, as the original XrayGPT did)",
    )
    mimic = sub.add_parser("mimic", parents=[common], help="MIMIC-CXR (reports + MIMIC-CXR-JPG)")
    mimic.add_argument(
        "--reports", type=Path, required=True, help="mimic-cxr-reports.zip or its files/ folder"
    )
    mimic.add_argument(
        "--split-csv", type=Path, required=True, help="mimic-cxr-2.0.0-split.csv(.gz)"
    )
    mimic.add_argument(
        "--chexpert-csv",
        type=Path,
        help="mimic-cxr-2.0.0-chexpert.csv(.gz): adds per-study CheXpert labels (positive = 1)",
    )
    mimic.add_argument(
        "--dicom",
        type=Path,
        help="the MIMIC-CXR (DICOM) root instead of --images: files/pXX/pSUBJECT/sSTUDY/*.dcm "
        "are windowed to 8-bit JPEGs",
    )
    mimic.add_argument(
        "--views",
        nargs="+",
        default=list(DEFAULT_VIEWS),
        metavar="VIEW",
        help="with --dicom: the ViewPosition values to keep (default: %(default)s, the frontal "
        f"views; e.g. PA AP LATERAL LL; {NO_VIEW} for files without one; all keeps every file)",
    )
    mimic.add_argument("--out", type=Path, default=Path("dataset/mimic"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.dataset == "openi":
            stats = prepare_openi(
                args.reports,
                args.out,
                args.images,
                max_side=args.max_side,
                workers=args.workers,
                seed=args.seed,
                val_fraction=args.val_fraction,
                test_fraction=args.test_fraction,
            )
        else:
            stats = prepare_mimic(
                args.reports,
                args.split_csv,
                args.out,
                args.images,
                chexpert_csv=args.chexpert_csv,
                max_side=args.max_side,
                workers=args.workers,
                dicom=args.dicom,
                views=None if [v.lower() for v in args.views] == ["all"] else args.views,
            )
    except (DataError, MissingFileError) as err:  # PrepareError is a DataError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    print(f"wrote {args.out / 'filter_cap.json'} and {args.out / 'prepare_stats.json'}")
    if "images" not in stats:
        print(
            f"no --images{' or --dicom' if args.dataset == 'mimic' else ''} given: image files were neither checked nor copied; "
            f"put them at {args.out / 'image'}/<image_id>{'.png' if args.dataset == 'openi' else '.jpg'}"
        )
    return 0
