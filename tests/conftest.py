"""Fixtures shared by the test folders: one CPU thread, a small random mini_gpt4, phantom data.

Tests cannot import each other (``--import-mode=importlib``), so what several
folders share lives here as fixtures.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny_models import SMALL_MODEL_OVERRIDES
from xraygpt.components import register_components

register_components()  # every test sees the registered components, as every command does


@pytest.fixture
def one_cpu_thread() -> Iterator[None]:
    """Toy models and image transforms run much faster on one thread than on two cores
    shared with other jobs. Folders opt in with an autouse fixture that requests this one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def small_model_overrides() -> dict[str, Any]:
    """A fresh copy of :data:`SMALL_MODEL_OVERRIDES` (the tests may change it)."""
    return copy.deepcopy(SMALL_MODEL_OVERRIDES)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.fixture
def make_model() -> Callable[..., Any]:
    """``make_model(seed=0, **overrides)``: a small tiny-type model, seeded."""
    from xraygpt.models.mini_gpt4 import MiniGPT4

    def make(seed: int = 0, **overrides: Any) -> MiniGPT4:
        torch.manual_seed(seed)
        cfg = MiniGPT4.default_config("tiny", _merge(SMALL_MODEL_OVERRIDES, overrides))
        for key, value in overrides.items():
            if value == {}:  # a merge cannot empty a mapping; assignment can
                cfg[key] = {}
        return MiniGPT4.from_config(cfg)

    return make


@pytest.fixture(scope="session")
def make_phantom(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_phantom(n, size=64)``: a folder of ``n`` phantoms (``python -m
    xraygpt.data.phantom.generator``, seed 0), drawn once per session for each ``(n, size)``.

    Tests read these folders; one that changes files works on a copy.
    """
    from xraygpt.cli.phantom import main as make_phantoms

    made: dict[tuple[int, int], Path] = {}

    def make(n: int, size: int = 64) -> Path:
        if (n, size) not in made:
            folder = tmp_path_factory.mktemp("phantom")
            assert make_phantoms(["--out", str(folder), "--n", str(n), "--size", str(size)]) == 0
            made[n, size] = folder
        return made[n, size]

    return make


# --------------------------------------------------------------------------- caption folders


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


# --------------------------------------------------------------------------- the quickstart


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``bash quickstart.sh`` run once per session into a temporary folder (slow tests only).

    Returns ``output``, ``data``, ``env`` (the environment it ran with) and ``result``
    (the finished process). The trained tiny model serves the quickstart test and the
    demo's browser test of a follow-up question.
    """
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    from xraygpt.common.config import REPO_ROOT

    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    if Path(sys.executable).resolve() != venv_python.resolve():
        pytest.fail(f"run the tests with {venv_python}: quickstart.sh uses that environment")
    root = tmp_path_factory.mktemp("quickstart")
    output, data = root / "output", root / "phantom"
    env = {**os.environ, "XRAYGPT_OUTPUT": str(output), "XRAYGPT_PHANTOM": str(data)}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "quickstart.sh")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return SimpleNamespace(output=output, data=data, env=env, result=result)
