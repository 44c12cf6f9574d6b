"""Training checkpoints: what goes in, atomic saving, finding the newest, resuming.

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` reads::

    model          trainable parameters only (the MiniGPT-4 / XrayGPT format)
    optimizer      AdamW state
    scaler         GradScaler state ({} without one)
    lr_sched       {"name", "last_step"}
    epoch, step    epoch of the last iteration, global iterations done
    world_size     processes of the run that wrote it
    rng            one entry per rank: python / numpy / torch / cuda (its own GPU) states
    config         the merged config as plain containers

Files in the job's output folder: ``checkpoint_<step>.pth`` (the newest
``keep_last_checkpoints`` kept) and ``checkpoint_last.pth``, a hard link to
(or, where links fail, a copy of) the newest, swapped in with an atomic
rename, so it always names a complete file.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xraygpt.common.io import atomic_torch_save

log = logging.getLogger(__name__)

LAST_NAME = "checkpoint_last.pth"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters with ``requires_grad``, detached on the CPU, under their module names."""
    return {
        name: param.detach().cpu().clone()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (``weights_only``-safe)."""
    version, words, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        # This process's own GPU only: asking for every device would open a CUDA context
        # on each GPU from each rank.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_states[0])
        else:
            log.warning("checkpoint has a CUDA RNG state but CUDA is unavailable: not restored")


def numbered_checkpoints(
    folder: str | Path, suffix: str = ".pth", complete: Callable[[Path], bool] = Path.is_file
) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``checkpoint_<step><suffix>`` in ``folder``, oldest
    first: the runner's files by default, FSDP's folders with ``suffix=""`` and their test
    of completeness."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    numbered = re.compile(rf"^checkpoint_(\d+){re.escape(suffix)}$")
    found = []
    for path in folder.iterdir():
        match = numbered.match(path.name)
        if match and complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(state: dict[str, Any], folder: str | Path, step: int, keep_last: int) -> Path:
    """Write ``checkpoint_<step>.pth``, repoint ``checkpoint_last.pth``, prune old ones.

    Each file appears complete or not at all: written to a temporary name in
    the same folder and renamed. ``keep_last`` numbered files are kept
    (``0`` keeps all); ``checkpoint_last.pth`` is always kept.
    """
    folder = Path(folder)
    path = folder / f"checkpoint_{step}.pth"
    atomic_torch_save(state, path)
    _replace_with_link(path, folder / LAST_NAME)
    if keep_last > 0:
        for _, old in numbered_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def _replace_with_link(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links: copy instead
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run left behind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        p for p in folder.iterdir() if p.name.startswith(".checkpoint_") and p.name.endswith(".tmp")
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def find_latest_checkpoint(
    folder: str | Path,
    suffix: str = ".pth",
    complete: Callable[[Path], bool] = Path.is_file,
    last: str | None = LAST_NAME,
) -> Path | None:
    """The newest complete checkpoint in ``folder``: ``last``, the name of the newest that
    its writer keeps, when it is complete, else the highest step (see
    :func:`numbered_checkpoints` for ``suffix`` and ``complete``)."""
    folder = Path(folder)
    if last is not None and complete(folder / last):
        return folder / last
    numbered = numbered_checkpoints(folder, suffix, complete)
    return numbered[-1][1] if numbered else None
