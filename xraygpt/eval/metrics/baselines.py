"""Reference points for a model's scores, computed from the training split.

* **most frequent**: the training split's most frequent report (exact text
  after trimming; ties go to the first seen), given for every test image. A
  model that does not beat it has learnt the prior, not the images.
* **nearest neighbour** (on request, ``run.nn_baseline: true``): for each test
  image, the report of the training image that looks most alike in a cheap
  feature space: the image in grayscale, resized to 32x32 (bilinear),
  standardised to zero mean and unit norm, compared by cosine similarity
  (ties go to the first training image). Every training image is decoded
  once, so it costs a pass over the training images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NN_SIZE = 32


def most_frequent_report(reports: Sequence[str]) -> str:
    """The most frequent report; ties go to the one seen first."""
    cleaned = [r.strip() for r in reports if r and r.strip()]
    if not cleaned:
        raise ValueError("no training reports to pick the most frequent one from")
    counts = Counter(cleaned)
    best = max(counts.values())
    return next(r for r in cleaned if counts[r] == best)


def image_features(path: str | Path, size: int = NN_SIZE) -> np.ndarray:
    """Grayscale, ``size`` x ``size``, zero mean, unit norm: a flat float32 vector."""
    from PIL import Image

    from xraygpt.processors.image_io import open_image, to_gray_or_rgb

    # open_image reads DICOM too (windowed), and to_gray_or_rgb keeps 16-bit PNGs from clipping.
    image = to_gray_or_rgb(open_image(path))
    small = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    vec = np.asarray(small, dtype=np.float32).reshape(-1)
    vec = vec - vec.mean()
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def _features(paths: Sequence[Path], what: str, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    return np.stack(
        [image_features(p) for p in tqdm(paths, desc=what, unit="img", disable=not progress)]
    )


def nearest_neighbour_reports(
    train_paths: Sequence[Path],
    train_reports: Sequence[str],
    query_paths: Sequence[Path],
    *,
    progress: bool = True,
    chunk: int = 1024,
) -> list[str]:
    """For each query image, the report of the most similar training image."""
    if len(train_paths) != len(train_reports):
        raise ValueError(f"{len(train_paths)} training images but {len(train_reports)} reports")
    if not train_paths:
        raise ValueError("no training images for the nearest-neighbour baseline")
    if not query_paths:
        return []
    train = _features(train_paths, "nn baseline: train images", progress)
    query = _features(query_paths, "nn baseline: test images", progress)
    best: list[int] = []
    for start in range(0, len(query), chunk):
        sims = query[start : start + chunk] @ train.T  # unit vectors: cosine similarity
        best.extend(int(i) for i in sims.argmax(axis=1))  # argmax: first of equals
    return [train_reports[i] for i in best]
