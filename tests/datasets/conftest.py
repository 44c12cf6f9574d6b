"""Small prepared dataset folders written by the tests (no downloads)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_caption_folder(
    root: Path,
    n: int = 12,
    *,
    ext: str = ".png",
    size: tuple[int, int] = (40, 48),
    splits: dict[str, int] | None = None,
    with_split: bool = True,
    labels: bool = False,
) -> list[dict]:
    """``root/filter_cap.json`` and ``root/image/img<i><ext>``; returns the entries."""
    (root / "image").mkdir(parents=True, exist_ok=True)
    splits = splits or {"train": n}
    names = [split for split, count in splits.items() for _ in range(count)]
    rng = np.random.default_rng(0)
    entries = []
    for i, split in enumerate(names):
        image_id = f"img{i:03d}"
        pixels = rng.integers(0, 256, size[::-1], dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "image" / f"{image_id}{ext}")
        entry = {"image_id": image_id, "caption": f"Finding number {i}. No effusion."}
        if with_split:
            entry["split"] = split
        if labels:
            entry["labels"] = {"Cardiomegaly": i % 2, "No Finding": 1 - i % 2}
        entries.append(entry)
    (root / "filter_cap.json").write_text(json.dumps({"annotations": entries}))
    return entries


@pytest.fixture
def make_caption_folder():
    """:func:`write_caption_folder`, for tests that need their own folders."""
    return write_caption_folder


@pytest.fixture
def caption_folder(tmp_path):
    """A 12-image OpenI-like folder (8 train, 2 val, 2 test); returns its path."""
    root = tmp_path / "openi"
    write_caption_folder(root, splits={"train": 8, "val": 2, "test": 2})
    return root


@pytest.fixture(autouse=True)
def _one_cpu_thread(one_cpu_thread: None) -> None:
    """Every data set test on one thread (tests/conftest.py says why)."""
