"""Reading and checking ``filter_cap.json`` annotation files.

Schema (docs/recipe.md §6, plus the fields ``prepare`` adds)::

    {"annotations": [
        {"image_id": "CXR1_1_IM-0001-3001",      # required: the image file's stem
         "caption": "The heart is normal ...",   # required: the report summary
         "split": "train",                       # optional: train / val / test
         "report_id": "CXR1",                    # optional
         "labels": {"Cardiomegaly": 1, ...}},    # optional: CheXpert observations, 0/1
        ...]}

Files without ``split`` (the original XrayGPT's) are all train.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS
from xraygpt.common.errors import DataError
from xraygpt.common.io import atomic_write_json

SPLITS = ("train", "val", "test")


class AnnotationError(DataError):
    """An annotation file that does not follow the schema."""


@dataclass(frozen=True)
class Annotation:
    image_id: str
    caption: str
    split: str = "train"
    report_id: str | None = None
    labels: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "image_id": self.image_id,
            "caption": self.caption,
            "split": self.split,
        }
        if self.report_id is not None:
            entry["report_id"] = self.report_id
        if self.labels is not None:
            entry["labels"] = dict(self.labels)
        entry.update(self.extra)
        return entry


def _check_labels(raw: Any, where: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise AnnotationError(f"{where}: 'labels' must be a mapping of observation -> 0/1")
    unknown = sorted(set(raw) - set(CHEXPERT_OBSERVATIONS))
    if unknown:
        raise AnnotationError(
            f"{where}: unknown label(s) {', '.join(map(repr, unknown))}; "
            f"labels must be CheXpert observations: {', '.join(CHEXPERT_OBSERVATIONS)}"
        )
    labels = {}
    for name in CHEXPERT_OBSERVATIONS:
        value = raw.get(name, 0)
        if type(value) not in (int, float) or value not in (0, 1):
            raise AnnotationError(f"{where}: label {name!r} must be 0 or 1, got {value!r}")
        labels[name] = int(value)
    return labels


def parse_entry(entry: Any, where: str) -> Annotation:
    """One annotation dict -> :class:`Annotation`; ``where`` names it in errors."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
    for key in ("image_id", "caption"):
        if key not in entry:
            raise AnnotationError(f"{where}: missing required key {key!r}")
    image_id = entry["image_id"]
    if isinstance(image_id, int) and not isinstance(image_id, bool):
        image_id = str(image_id)
    if not isinstance(image_id, str) or not image_id.strip():
        raise AnnotationError(f"{where}: 'image_id' must be a non-empty string, got {image_id!r}")
    if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
        raise AnnotationError(
            f"{where}: 'image_id' {image_id!r} must be a file stem, not a path; "
            f"images live in <storage>/image/<image_id><ext>"
        )
    caption = entry["caption"]
    if not isinstance(caption, str) or not caption.strip():
        raise AnnotationError(f"{where}: 'caption' must be a non-empty string, got {caption!r}")
    split = entry.get("split", "train")
    if split not in SPLITS:
        raise AnnotationError(f"{where}: 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    report_id = entry.get("report_id")
    if report_id is not None:
        report_id = str(report_id)
    labels = _check_labels(entry["labels"], where) if entry.get("labels") is not None else None
    known = {"image_id", "caption", "split", "report_id", "labels"}
    extra = {k: v for k, v in entry.items() if k not in known}
    return Annotation(image_id, caption, split, report_id, labels, extra)


def load_annotations(path: str | Path) -> list[Annotation]:
    """All entries of an annotation file, checked. Errors name the file and the entry index."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise AnnotationError(
            f"{path}: expected an object with an 'annotations' list, "
            f'i.e. {{"annotations": [{{"image_id": ..., "caption": ...}}, ...]}}'
        )
    entries = [
        parse_entry(entry, f"{path}: annotations[{index}]")
        for index, entry in enumerate(data["annotations"])
    ]
    return entries


def split_annotations(entries: list[Annotation]) -> dict[str, list[Annotation]]:
    """Group by split, keeping file order; only splits that have entries appear."""
    groups: dict[str, list[Annotation]] = {}
    for entry in entries:
        groups.setdefault(entry.split, []).append(entry)
    return {split: groups[split] for split in SPLITS if split in groups}


def write_annotations(entries: list[Annotation], path: str | Path) -> None:
    atomic_write_json({"annotations": [entry.to_json() for entry in entries]}, path)
