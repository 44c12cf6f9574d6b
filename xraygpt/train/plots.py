"""Training curves of a run folder: loss, learning rate, throughput (and gradient norm).

    xraygpt plot-run output/xraygpt_tiny_stage1
    xraygpt plot-run output/xraygpt_tiny_stage1 output/xraygpt_tiny_stage2

Reads ``<run>/log.jsonl`` (a line per ``run.log_freq`` iterations, written by
the runner) and writes ``<run>/training_curves.png`` (or ``--out`` for a
single run). A resumed run repeats the iterations between its last
checkpoint and the kill: the later line of a step wins, as it is the one the
finished model went through.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOG_NAME = "log.jsonl"
PICTURE_NAME = "training_curves.png"
# (key in log.jsonl, panel title, log scale)
PANELS = (
    ("loss", "loss", False),
    ("lr", "learning rate", False),
    ("samples_per_s", "throughput (samples/s, all processes)", False),
    ("grad_norm", "gradient norm (before clipping)", True),
)


class RunLogError(ValueError):
    """A run folder without a readable log.jsonl."""


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of ``<run_dir>/log.jsonl`` by step, each step once (its last line)."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise RunLogError(
            f"{path} not found: name a run folder that train.py wrote (run.output_dir/job_name)"
        )
    by_step: dict[int, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RunLogError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise RunLogError(f"{path}:{lineno}: expected an object with an integer 'step'")
            by_step[record["step"]] = record
    if not by_step:
        raise RunLogError(f"{path}: no lines yet (the runner writes one every run.log_freq steps)")
    return [by_step[s] for s in sorted(by_step)]


def _series(lines: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for line in lines:
        value = line.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            steps.append(line["step"])
            values.append(float(value))
    return steps, values


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the training-curve picture of one run folder; returns its path."""
    from xraygpt.common.figures import pyplot, save_figure

    run_dir = Path(run_dir)
    lines = read_log(run_dir)
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, constrained_layout=True)
    for ax, (key, title, log_scale) in zip(axes.flat, PANELS, strict=True):
        steps, values = _series(lines, key)
        if values:
            ax.plot(steps, values, marker="." if len(values) < 50 else None, linewidth=1.2)
            if log_scale and min(values) > 0:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    bad_steps = sum(int(line.get("bad_steps") or 0) for line in lines)
    bad_images = sum(int(line.get("bad_images") or 0) for line in lines)
    fig.suptitle(
        f"{run_dir.name}: {len(lines)} log points to iteration {lines[-1]['step']}; "
        f"skipped steps {bad_steps}, unreadable images {bad_images}"
    )
    path = save_figure(fig, Path(out) if out else run_dir / PICTURE_NAME)
    plt.close(fig)
    return path
