"""Exporters: the trained model in the ecosystem's formats (``xraygpt export hf|llm``).

:mod:`.hf`: the whole model as transformers' ``Blip2ForConditionalGeneration``;
:mod:`.language_model`: the language model alone as a ``LlamaForCausalLM`` folder, LoRA merged.

Both write the same way, here: the folder is written under a temporary name beside
``--out`` and renamed when complete, so it appears whole or not at all; a killed
export's temporary folder is removed by the next export to the same ``--out``;
``--overwrite`` replaces only an earlier export (a folder with ``xraygpt_export.json``)
or an empty folder, never a folder of anything else (a training run, say).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from xraygpt.common.constants import EXPORT_INFO
from xraygpt.common.errors import OutputExistsError, UsageError

log = logging.getLogger(__name__)


class ExportError(UsageError):
    """A config, model or ``--out`` that cannot be written as an export."""


class ExportOutError(ExportError, OutputExistsError):
    """An ``--out`` that holds what an export may not replace."""


#: The largest safetensors shard an export writes unless told otherwise.
DEFAULT_SHARD_SIZE = "2GB"


def check_out(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``--out`` the export may not write: a file, a folder with content unless
    ``overwrite``, and with ``overwrite`` a folder that is not an earlier export."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file: name a folder to write the export into")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportOutError(
            f"--out {out} exists and is not empty; name a new folder, or pass --overwrite "
            f"to replace an earlier export"
        )
    if not (out / EXPORT_INFO).is_file():
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise ExportOutError(
            f"--out {out} is not an earlier export (it has no {EXPORT_INFO}; it holds "
            f"{shown}): --overwrite replaces only an export or an empty folder; name a new "
            f"folder"
        )


def partial_folder(out: Path) -> Path:
    """The empty folder, beside ``out``, that an export writes into before it is renamed
    ``out``; what a killed export to ``out`` left there is removed first. Created with
    the user's umask, as every other output."""
    partial = out.with_name(f".{out.name}.partial")
    if partial.exists():
        log.info("removing %s, left by an export to %s that did not finish", partial, out)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return partial


def publish(partial: Path, out: Path) -> None:
    """Put the complete ``partial`` folder in place of ``out`` (checked by :func:`check_out`:
    absent, empty or an earlier export)."""
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
