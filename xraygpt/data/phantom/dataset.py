"""The phantom conversations: multi-turn chats about each phantom image, with or without it.

The phantom generator writes ``<storage>/conversations/<split>.json`` (FastChat /
ShareGPT layout, validated by :func:`xraygpt.data.conversations.load_conversation_file`;
each entry also names its ``image`` and whether it opens with the report,
``report_first``). The builder ``phantom_conversations`` reads them with the
phantom images::

    datasets:
      phantom_conversations: {with_images: true}

A sample is ``{"image": [3, H, W], "conversation": [[role, text], ...],
"image_id"}`` with roles ``user`` / ``assistant``; the first user turn holds
``<Img><ImageHere></Img>``. With ``with_images: false`` (the tiny recipe's
text-only LLM stage) ``image`` is an empty tensor and only the conversations
that open with the report are kept: without the image, the report in the
context is what the answers follow from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from xraygpt.common.config import ConfigError
from xraygpt.common.registry import registry
from xraygpt.data.builders import CaptionDatasetConfig, PhantomBuilder
from xraygpt.data.caption_dataset import CaptionDataset, read_image
from xraygpt.data.conversations import ConversationFileError, load_conversation_file

log = logging.getLogger(__name__)


class PhantomConversationDataset(Dataset):
    """Conversations of one split, each with its phantom image (or none)."""

    def __init__(
        self,
        records: list[tuple[str, list[list[str]]]],
        images: CaptionDataset,
        *,
        with_images: bool,
        split: str,
    ) -> None:
        self.records = records
        self.images = images
        self.with_images = with_images
        self.name = "phantom_conversations"
        self.split = split
        self.sample_ratio = 1.0
        self._index = {ann.image_id: i for i, ann in enumerate(images.annotations)}
        missing = sorted({image for image, _ in records} - set(self._index))
        if missing:
            raise ConfigError(
                f"phantom conversations ({split}) name {len(missing)} image(s) missing from the "
                f"annotation file, e.g. {missing[0]}; regenerate the folder with "
                f"{PhantomBuilder.PREPARE_COMMAND}"
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, turns = self.records[index]
        if self.with_images:
            image = read_image(
                self.images.image_path(self._index[image_id]), self.images.vis_processor
            )
        else:
            image = torch.empty(0)
        return {
            "image": image,
            "conversation": [list(turn) for turn in turns],
            "image_id": image_id,
            "skipped": 0,
        }


@dataclass
class PhantomConversationsConfig(CaptionDatasetConfig):
    conversations_dir: str = "conversations"  # relative to build_info.storage: <split>.json
    with_images: bool = True


@registry.register_builder("phantom_conversations")
class PhantomConversationsBuilder(PhantomBuilder):
    """``{split: PhantomConversationDataset}`` from the phantom folder (see the module doc)."""

    name = "phantom_conversations"
    config_class = PhantomConversationsConfig
    DATASET_CONFIG_DICT = {"default": "configs/datasets/phantom_conversations/defaults.yaml"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        super().check_config(cfg)
        if cfg.data_type != "images":
            raise ConfigError(
                "datasets.phantom_conversations reads image folders (data_type: images)"
            )

    def build_datasets(self) -> dict[str, Dataset]:
        images = self._build_images()
        folder = self.storage / self.config.conversations_dir
        datasets: dict[str, Dataset] = {}
        for split, base in images.items():
            path = folder / f"{split}.json"
            if not path.is_file():
                raise self._missing(f"conversation file ({split})", path)
            records, _ = load_conversation_file(path)
            entries = json.loads(Path(path).read_text(encoding="utf-8"))
            meta = {str(e.get("id", i)): e for i, e in enumerate(entries)}
            kept = []
            for record in records:
                entry = meta[record.id]
                if "image" not in entry:
                    raise ConversationFileError(
                        f"{path}: conversation {record.id!r} has no 'image' (the phantom "
                        f"conversations name their image)"
                    )
                if not self.config.with_images and not entry.get("report_first", False):
                    continue
                kept.append((str(entry["image"]), [list(turn) for turn in record.turns]))
            dataset = PhantomConversationDataset(
                kept, base, with_images=self.config.with_images, split=split
            )
            dataset.sample_ratio = float(self.config.sample_ratio)
            datasets[split] = dataset
        log.info(
            "dataset %s: %s",
            self.name,
            ", ".join(f"{split} {len(ds)}" for split, ds in datasets.items()),  # type: ignore[arg-type]
        )
        return datasets
