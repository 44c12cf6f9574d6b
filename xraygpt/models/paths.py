"""Paths of the ``model:`` section: where a config's weight, tokenizer and prompt files are.

A path is absolute, or relative to the working folder, else to the repo root, so that
the shipped configs work from anywhere and a user's relative path works where they are.
"""

from __future__ import annotations

from pathlib import Path

from xraygpt.common.config import REPO_ROOT
from xraygpt.common.errors import MissingFileError


def resolve_path(value: str | None) -> Path | None:
    """A config path: absolute, or relative to the working folder, else to the repo root."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def require_path(value: str, key: str, *, folder: bool = False, hint: str = "") -> Path:
    """The resolved path of config key ``model.<key>``; an error naming key and path if absent."""
    path = resolve_path(value)
    ok = path is not None and (path.is_dir() if folder else path.is_file())
    if not ok:
        what = "folder" if folder else "file"
        raise MissingFileError(
            f"model.{key}: {what} {value!r} not found (looked at {path}). {hint}".rstrip()
        )
    return path
