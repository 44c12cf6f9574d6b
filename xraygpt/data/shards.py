"""Write a prepared dataset folder as WebDataset tar shards.

    xraygpt shards --storage dataset/mimic --split train \\
        --out shards/mimic --shard-size 1000

Each sample is ``<key>.<ext>`` (the image file's bytes, not re-encoded) and
``<key>.json`` (its annotation entry). Samples are shuffled with ``--seed``
before writing so that consecutive images of one patient spread over the
shards, and every shard holds ``--shard-size`` samples but the last. Shards
are written under a temporary name and renamed when complete. The command
prints the brace pattern to put in a dataset config::

    datasets:
      mimic:
        data_type: wds
        build_info: {shards: "shards/mimic/train-{000000..000240}.tar"}
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from webdataset import TarWriter

from xraygpt.common.errors import MissingFileError
from xraygpt.common.io import atomic_write_json
from xraygpt.data.annotations import SPLITS, Annotation, load_annotations

log = logging.getLogger(__name__)

_FIXED_MTIME = 0.0  # reproducible tar files: the same inputs give the same bytes


def shard_key(index: int) -> str:
    # image ids may hold dots, which webdataset reads as extension separators
    return f"{index:09d}"


def write_shards(
    storage: Path,
    split: str,
    out: Path,
    shard_size: int = 1000,
    image_ext: str = ".jpg",
    seed: int = 0,
    ann_file: str = "filter_cap.json",
    image_dir: str = "image",
) -> dict[str, Any]:
    """Write ``<out>/<split>-NNNNNN.tar``; returns the manifest (also written as JSON).

    Entries whose image is missing are left out and counted.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    ann_path = storage / ann_file
    if not ann_path.is_file():
        raise MissingFileError(
            f"annotation file not found: {ann_path}; prepare the folder first with "
            f"xraygpt prepare (see dataset/README.md)"
        )
    ext = image_ext if image_ext.startswith(".") else f".{image_ext}"
    entries: list[Annotation] = [a for a in load_annotations(ann_path) if a.split == split]
    if not entries:
        raise ValueError(f"{ann_path} has no entries of split {split!r}")
    order = (
        np.random.default_rng(seed).permutation(len(entries)) if seed >= 0 else range(len(entries))
    )
    out.mkdir(parents=True, exist_ok=True)
    n_shards = -(-len(entries) // shard_size)
    digits = max(6, len(str(n_shards - 1)))
    missing = 0
    written = 0
    shard_index = 0
    writer: TarWriter | None = None
    tmp_path = final_path = None
    names: list[str] = []
    count_in_shard = 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            tmp_path.replace(final_path)  # type: ignore[union-attr]
            writer = None

    try:
        for position in tqdm(order, total=len(entries), desc=f"shards {split}", unit="img"):
            entry = entries[int(position)]
            image_path = storage / image_dir / f"{entry.image_id}{ext}"
            if not image_path.is_file():
                missing += 1
                log.warning("image not found, left out of the shards: %s", image_path)
                continue
            if writer is None or count_in_shard >= shard_size:
                close()
                final_path = out / f"{split}-{shard_index:0{digits}d}.tar"
                tmp_path = final_path.with_name(f".{final_path.name}.tmp")
                writer = TarWriter(str(tmp_path), encoder=False, mtime=_FIXED_MTIME)
                names.append(final_path.name)
                shard_index += 1
                count_in_shard = 0
            writer.write(
                {
                    "__key__": shard_key(written),
                    ext.lstrip(".").lower(): image_path.read_bytes(),
                    "json": json.dumps(entry.to_json(), sort_keys=True).encode("utf-8"),
                }
            )
            written += 1
            count_in_shard += 1
        close()
    except BaseException:
        if writer is not None:
            writer.close()
            tmp_path.unlink(missing_ok=True)  # type: ignore[union-attr]
        raise
    if not names:
        raise MissingFileError(f"no image of split {split!r} found in {storage / image_dir}")
    pattern = str(out / f"{split}-{{{0:0{digits}d}..{len(names) - 1:0{digits}d}}}.tar")
    if len(names) == 1:
        pattern = str(out / names[0])
    manifest = {
        "storage": str(storage),
        "split": split,
        "samples": written,
        "missing_images": missing,
        "shard_size": shard_size,
        "shards": names,
        "pattern": pattern,
        "seed": seed,
    }
    atomic_write_json(manifest, out / f"{split}-manifest.json")
    return manifest
