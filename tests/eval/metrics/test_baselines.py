"""Most-frequent and nearest-neighbour baseline reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraygpt.eval.metrics.baselines import (
    image_features,
    most_frequent_report,
    nearest_neighbour_reports,
)


def test_most_frequent_report() -> None:
    reports = ["B.", "A.", " A. ", "B.", "C."]
    assert most_frequent_report(reports) == "B."  # tie between A. and B.: first seen
    assert most_frequent_report(["x", "y", "y"]) == "y"
    with pytest.raises(ValueError, match="no training reports"):
        most_frequent_report(["", "  "])


def _image(path: Path, pattern: np.ndarray) -> Path:
    Image.fromarray(pattern.astype(np.uint8), mode="L").save(path)
    return path


def test_nearest_neighbour_finds_the_same_picture(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (48, 48)) for _ in range(4)]
    train = [_image(tmp_path / f"train{i}.png", p) for i, p in enumerate(patterns)]
    reports = [f"report {i}" for i in range(4)]
    # queries: train images 2 and 0, brighter and slightly noisy (features are standardised)
    q2 = np.clip(patterns[2] * 0.8 + 40 + rng.normal(0, 3, (48, 48)), 0, 255)
    q0 = np.clip(patterns[0] * 0.9 + 10, 0, 255)
    queries = [_image(tmp_path / "q2.png", q2), _image(tmp_path / "q0.png", q0)]
    assert nearest_neighbour_reports(train, reports, queries, progress=False) == [
        "report 2",
        "report 0",
    ]
    assert nearest_neighbour_reports(train, reports, [], progress=False) == []
    with pytest.raises(ValueError, match="4 training images but 3"):
        nearest_neighbour_reports(train, reports[:3], queries, progress=False)


def test_features_are_unit_vectors(tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (100, 60), (10, 200, 30)).save(rgb)
    flat = image_features(rgb)
    assert flat.shape == (32 * 32,) and not flat.any()  # a flat image has no contrast
    gradient = _image(tmp_path / "g.png", np.tile(np.arange(64) * 4, (64, 1)))
    assert np.linalg.norm(image_features(gradient)) == pytest.approx(1.0, abs=1e-5)


def test_features_of_a_dicom_and_of_a_16_bit_png_match_the_8_bit_image(tmp_path: Path) -> None:
    from xraygpt.processors.dicom import write_dicom

    pixels = np.tile(np.arange(64) * 4 + 3, (64, 1)).astype(np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255
    reference = image_features(_image(tmp_path / "g.png", pixels))
    dicom = write_dicom(tmp_path / "g.dcm", pixels.astype(np.uint16) * 257)  # 16-bit range
    wide = tmp_path / "g16.png"
    Image.fromarray(pixels.astype(np.uint16) * 257).save(wide)
    assert np.array_equal(image_features(dicom), reference)
    assert np.array_equal(image_features(wide), reference)
