"""``xraygpt shards``: a prepared data set folder as WebDataset tar shards.

    xraygpt shards --storage dataset/mimic --split train --out shards/mimic

The work is :func:`xraygpt.data.shards.write_shards`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from xraygpt.data.annotations import SPLITS
from xraygpt.data.shards import write_shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xraygpt shards",
        description="Write a prepared dataset folder (filter_cap.json + image/) as tar shards.",
    )
    parser.add_argument("--storage", type=Path, required=True, help="e.g. dataset/mimic")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--out", type=Path, required=True, help="e.g. shards/mimic")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument(
        "--image-ext", default=None, help="default: .png if storage names openi, else .jpg"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="shuffle seed of the sample order (-1: keep file order)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ext = args.image_ext or (".png" if "openi" in args.storage.name.lower() else ".jpg")
    try:
        manifest = write_shards(args.storage, args.split, args.out, args.shard_size, ext, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {manifest['samples']} samples in {len(manifest['shards'])} shards "
        f"({manifest['missing_images']} missing images left out)"
    )
    print(f"config: data_type: wds, build_info.shards: {manifest['pattern']}")
    return 0
