"""metrics.png: written, a real PNG, with and without intervals."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraygpt.eval.metrics.scoring import make_record, score_records
from xraygpt.eval.plots import plot_metrics

PNG = b"\x89PNG\r\n\x1a\n"
REFS = [
    "Moderate cardiomegaly. Small left pleural effusion.",
    "The lungs are clear.",
    "Mild edema.",
]
GEN = ["moderate cardiomegaly", "the lungs are clear", "mild pulmonary edema"]


@pytest.mark.parametrize("bootstrap", [0, 50])
def test_metrics_png_is_written(tmp_path: Path, bootstrap: int) -> None:
    records = [
        make_record(f"i{k}", "p", g, r, {"most_frequent": REFS[1]})
        for k, (g, r) in enumerate(zip(GEN, REFS, strict=True))
    ]
    metrics = score_records(records, meteor=False, use_java=False, bootstrap=bootstrap)
    path = plot_metrics(metrics, tmp_path / "sub" / "metrics.png")
    data = path.read_bytes()
    assert path == tmp_path / "sub" / "metrics.png"
    assert data.startswith(PNG) and len(data) > 10_000
    assert not list(path.parent.glob(".*.tmp"))  # atomic: no temporary file left
