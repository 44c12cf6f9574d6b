"""Set-up checks of conversation files (``datasets.conversations``, run.task conversation_sft)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from xraygpt.validate.checklist import Checklist


def check_conversation_files(
    out: Checklist, name: str, builder: Any, needed_splits: Iterable[str] = ("train",)
) -> None:
    """Every configured file reads and follows the FastChat / ShareGPT layout; the splits
    the run needs have files."""
    from xraygpt.data.conversations import ConversationFileError, load_conversation_file

    group = "datasets"
    key = f"datasets.{name}.files"
    make = getattr(builder, "PREPARE_COMMAND", "")
    splits: dict[str, int] = {}
    for index, (path, ratio, split) in enumerate(builder.conversation_files):
        check = f"{name}: {path.name}"
        splits.setdefault(split, 0)
        if not path.is_file():
            out.failed(
                group,
                check,
                f"{path} not found ({key}[{index}].path)",
                f"point {key}[{index}].path at the file, or make one: {make}",
            )
            continue
        try:
            records, stats = load_conversation_file(path)
        except ConversationFileError as err:
            out.failed(
                group,
                check,
                str(err),
                "repair the entry named (roles human/gpt alternate, human first, values "
                "non-empty, 'conversations' a list), or write the file again",
            )
            continue
        except (OSError, UnicodeDecodeError) as err:
            out.failed(group, check, f"cannot read {path}: {err}", "check the file's permissions")
            continue
        splits[split] = splits.get(split, 0) + len(records)
        turns = sum(len(r.turns) for r in records)
        skipped = (
            f"; {stats.no_assistant} skipped (no assistant turn)" if stats.no_assistant else ""
        )
        out.add(
            group,
            check,
            bool(records),
            f"{path}: {len(records)} conversations, {turns} turns (split {split}, "
            f"ratio {ratio:g}){skipped}",
            f"{path} holds no conversation with an assistant turn: nothing to train on",
        )
    absent = [s for s in dict.fromkeys(needed_splits) if s not in splits]
    if absent:
        out.failed(
            group,
            f"{name}: splits",
            f"no conversation file for split(s) {', '.join(absent)} the run uses",
            f"add a file with split: {absent[0]} to {key}, or drop the split from run.train_splits",
        )
