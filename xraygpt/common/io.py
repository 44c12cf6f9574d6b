"""File writing that never leaves a half-written file behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from xraygpt.common.errors import CheckpointError, DiskFullError, MissingFileError


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_disk_full(err):
            free = shutil.disk_usage(path.parent).free / 2**20
            previous = (
                f"the previous {path.name} is untouched"
                if path.exists()
                else f"no {path.name} was written"
            )
            raise DiskFullError(
                errno.ENOSPC,
                f"cannot write {path}: no space left on its disk ({free:.0f} MiB free in "
                f"{path.parent}); the partial file was removed and {previous}. Free some "
                "space (old checkpoint_<step>.pth files, run.keep_last_checkpoints) or "
                "write elsewhere (run.output_dir), then resume with run.resume=auto",
            ) from err
        raise


def _is_disk_full(err: BaseException) -> bool:
    """An out-of-space error, also when torch's writer wraps it in a RuntimeError."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | Path) -> None:
    _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def load_checkpoint(path: str | Path, what: str = "checkpoint", *, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True`` and an error that names the file.

    An empty or truncated file (an interrupted download, copy or save) raises
    :class:`CheckpointError` saying so and what to do, not the bare ``EOFError``
    or zip error torch gives. ``mmap``: map the file instead of reading it (a
    2 GB checkpoint is inspected without reading it all); files in torch's
    legacy format, which cannot be mapped, are read.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"{what} {path} is empty (0 bytes): its download, copy or save was interrupted "
            f"before anything was written. {_REDO}"
        )
    try:
        if mmap:
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):  # only the legacy (non-zip) format cannot be mapped
                    raise
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file named
        if _is_truncated(path, err):
            raise CheckpointError(
                f"{what} {path} is truncated ({size} bytes, its end is missing): its "
                f"download, copy or save was cut off. {_REDO}"
            ) from err
        raise CheckpointError(
            f"cannot load {what} {path} with weights_only=True: {type(err).__name__}: {err}"
        ) from err


_REDO = (
    "Download or copy it again (compare its size with the original), or point the config "
    "at another file; for a training checkpoint, resume from an earlier checkpoint_<step>.pth "
    "of the same folder with run.resume_ckpt_path"
)

_ZIP_MAGIC = b"PK\x03\x04"


def _is_truncated(path: Path, err: BaseException) -> bool:
    """Whether ``torch.load`` failed because the file ends early.

    A torch zip checkpoint keeps its table of contents at the end, so a file that
    starts like a zip but is not a complete one lost its end; a legacy (pickle)
    checkpoint cut short fails with ``EOFError`` or pickle's "truncated".
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        return not zipfile.is_zipfile(path)
    message = str(err).lower()
    return isinstance(err, EOFError) or "truncated" in message or "unexpected eof" in message
