"""Images/s of the training image processor: raw MIMIC-size JPEGs and DICOMs against prepared copies.

    python benchmarks/bench_data.py [--n 20] [--dicom-n 4] [--width 2500 --height 3000]

Writes a few grayscale JPEGs of MIMIC-CXR-JPG's size (~2500 x 3000) with
film-like texture to a temporary folder, the downscaled copies that
``xraygpt prepare`` makes (longer side 512), and times
decode + ``blip2_image_train`` per image, one process, for:

- ``raw full decode``: the raw JPEG decoded at full size (the original's way);
- ``raw draft decode``: the raw JPEG with libjpeg's draft (DCT-scaled) decode;
- ``prepared copy``: the downscaled copy;
- ``raw DICOM, uncompressed``: the same films as 12-bit values in 16-bit words
  (Explicit VR Little Endian, as MIMIC-CXR's DICOMs), windowed by
  :mod:`xraygpt.processors.dicom` (``--dicom-n`` of them: JPEG 2000 is slow);
- ``raw DICOM, JPEG 2000 lossless``: the same DICOMs compressed with
  pylibjpeg-openjpeg.

DICOMs are read as training reads them: windowed at full size, then
box-reduced like a JPEG draft. Each DICOM row also gives the full-size decode
+ windowing time alone (``decode_ms``).
The record lists the transfer syntaxes the installed plugins decode.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import report
from PIL import Image
from pydicom.uid import JPEG2000Lossless

from xraygpt.common.errors import run_main
from xraygpt.processors.blip_processors import Blip2ImageTrainProcessor
from xraygpt.processors.dicom import decodable_transfer_syntaxes, write_dicom
from xraygpt.processors.image_io import open_image, save_downscaled


def fake_film(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth anatomy-like shading plus grain on a 0..255 float scale."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    body = np.exp(-(((x - cx) / (0.45 * width)) ** 4 + ((y - cy) / (0.5 * height)) ** 4))
    lungs = sum(
        np.exp(
            -(((x - cx + s * 0.2 * width) / (0.15 * width)) ** 2 + ((y - cy) / (0.3 * height)) ** 2)
        )
        for s in (-1, 1)
    )
    return 200 * body - 120 * lungs + rng.normal(0, 6, (height, width))


def fake_radiograph(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """:func:`fake_film` as an 8-bit image: compresses like a real film, not like noise."""
    return Image.fromarray(
        np.clip(fake_film(rng, width, height), 0, 255).astype(np.uint8), mode="L"
    )


def fake_dicom_values(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """:func:`fake_film` as 12-bit stored values (a CR/DX detector's depth) in uint16."""
    values = np.clip(fake_film(rng, width, height), 0, 255) * (4095 / 255)
    return np.rint(values).astype(np.uint16)


def time_decode(paths: list[Path], repeats: int) -> float:
    """Milliseconds per image of the reader alone (decode, and windowing for DICOM)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            open_image(path)
        best = min(best, (time.perf_counter() - start) / len(paths))
    return 1000 * best


def time_variant(paths: list[Path], processor, draft: int | None, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            processor(open_image(path, draft_size=draft))
        best = max(best, len(paths) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12, help="distinct images")
    parser.add_argument("--width", type=int, default=2500)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--max-side", type=int, default=512, help="prepared copies' longer side")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--dicom-n", type=int, default=4, help="distinct DICOMs (0: no DICOM variants)"
    )
    args = parser.parse_args(argv)

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
        dicom_mb = {}
        plain, j2k = [], []
        for i in range(args.dicom_n):
            values = fake_dicom_values(rng, args.width, args.height)
            plain.append(write_dicom(Path(tmp) / f"raw_{i}.dcm", values, bits_stored=12))
            j2k.append(
                write_dicom(
                    Path(tmp) / f"j2k_{i}.dcm",
                    values,
                    bits_stored=12,
                    transfer_syntax=JPEG2000Lossless,
                )
            )
        for name, paths in (
            ("raw DICOM, uncompressed", plain),
            ("raw DICOM, JPEG 2000 lossless", j2k),
        ):
            if not paths:
                continue
            # As training reads them: windowed, then reduced like a JPEG draft.
            rate = time_variant(paths, processor, processor.decode_size, args.repeats)
            rows.append(
                {
                    "variant": name,
                    "images_per_s": rate,
                    "ms_per_image": 1000 / rate,
                    "decode_ms": time_decode(paths, args.repeats),
                }
            )
            dicom_mb[name] = round(sum(p.stat().st_size for p in paths) / len(paths) / 2**20, 2)
    report(
        "bench_data",
        vars(args),
        rows,
        {
            "prepared_vs_raw_full": rows[2]["images_per_s"] / rows[0]["images_per_s"],
            "draft_vs_raw_full": rows[1]["images_per_s"] / rows[0]["images_per_s"],
            "mean_file_mb": {"raw": round(raw_mb, 2), "prepared": round(small_mb, 3), **dicom_mb},
            "decodable_transfer_syntaxes": decodable_transfer_syntaxes(),
        },
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
