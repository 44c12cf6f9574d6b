"""Figures: matplotlib on the headless backend, saved atomically (evaluation's and
training's pictures)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from xraygpt.common.io import atomic_write_bytes


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend; a clear error without matplotlib."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "plots need the 'matplotlib' package: pip install -r requirements.txt"
        ) from err
    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as a PNG, written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    atomic_write_bytes(buffer.getvalue(), path)
    return path
