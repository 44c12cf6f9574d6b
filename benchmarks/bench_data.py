"""Images/s of the training image processor: raw MIMIC-size JPEGs against prepared copies.

    python benchmarks/bench_data.py [--n 20] [--width 2500 --height 3000]

Writes a few grayscale JPEGs of MIMIC-CXR-JPG's size (~2500 x 3000) with
film-like texture to a temporary folder, the downscaled copies that
``python -m xraygpt.tools.prepare`` makes (longer side 512), and times
decode + ``blip2_image_train`` per image, one process, for:

- ``raw full decode``: the raw JPEG decoded at full size (the original's way);
- ``raw draft decode``: the raw JPEG with libjpeg's draft (DCT-scaled) decode;
- ``prepared copy``: the downscaled copy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import report
from PIL import Image

from xraygpt.processors.blip_processors import Blip2ImageTrainProcessor
from xraygpt.processors.image_io import open_image, save_downscaled


def fake_radiograph(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth anatomy-like shading plus grain: compresses like a real film, not like noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    body = np.exp(-(((x - cx) / (0.45 * width)) ** 4 + ((y - cy) / (0.5 * height)) ** 4))
    lungs = sum(
        np.exp(
            -(((x - cx + s * 0.2 * width) / (0.15 * width)) ** 2 + ((y - cy) / (0.3 * height)) ** 2)
        )
        for s in (-1, 1)
    )
    img = 200 * body - 120 * lungs + rng.normal(0, 6, (height, width))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def time_variant(paths: list[Path], processor, draft: int | None, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            processor(open_image(path, draft_size=draft))
        best = max(best, len(paths) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12, help="distinct images")
    parser.add_argument("--width", type=int, default=2500)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--max-side", type=int, default=512, help="prepared copies' longer side")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(1)  # one data-loader worker's view
    rng = np.random.default_rng(0)
    processor = Blip2ImageTrainProcessor(image_size=args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        raw, small = [], []
        for i in range(args.n):
            path = Path(tmp) / f"raw_{i}.jpg"
            fake_radiograph(rng, args.width, args.height).save(path, quality=95)
            raw.append(path)
            small.append(Path(tmp) / f"small_{i}.jpg")
            save_downscaled(path, small[-1], args.max_side)
        rows = []
        for name, paths, draft in (
            ("raw full decode", raw, None),
            ("raw draft decode", raw, processor.decode_size),
            ("prepared copy", small, None),
        ):
            rate = time_variant(paths, processor, draft, args.repeats)
            rows.append({"variant": name, "images_per_s": rate, "ms_per_image": 1000 / rate})
        raw_mb = sum(p.stat().st_size for p in raw) / len(raw) / 2**20
        small_mb = sum(p.stat().st_size for p in small) / len(small) / 2**20
    report(
        "bench_data",
        vars(args),
        rows,
        {
            "prepared_vs_raw_full": rows[2]["images_per_s"] / rows[0]["images_per_s"],
            "draft_vs_raw_full": rows[1]["images_per_s"] / rows[0]["images_per_s"],
            "mean_file_mb": {"raw": round(raw_mb, 2), "prepared": round(small_mb, 3)},
        },
    )


if __name__ == "__main__":
    main()
