"""Image-caption samples streamed from WebDataset tar shards.

Shards are written by ``xraygpt shards``: each sample is an
image file (``<key>.jpg`` / ``<key>.png``) and ``<key>.json``, the annotation
entry. Reading uses webdataset's tar iterators; the split of shards among
ranks and DataLoader workers ("consumers") and the shuffling are done here, as
pure functions of (seed, epoch, consumer), so that every consumer reads
different shards and a run can be resumed exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import torch
from braceexpand import braceexpand
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from xraygpt.common.errors import MissingFileError
from xraygpt.data.annotations import AnnotationError, parse_entry
from xraygpt.data.caption_dataset import (
    DEFAULT_MIN_IMAGE_SIZE,
    IMAGE_ERRORS,
    CaptionSource,
    make_sample,
    read_image,
)

_SHUFFLE_TAG = 0x5A17  # keeps the shuffle streams apart from other seeded streams


def expand_shards(pattern: str | list[str]) -> list[str]:
    """A brace pattern (``shards/mimic/train-{000000..000012}.tar``) or list -> paths.

    Every shard must exist; the error names the first missing one.
    """
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls = [url for item in patterns for url in braceexpand(str(item))]
    if not urls:
        raise MissingFileError(f"shard pattern {pattern!r} names no files")
    missing = [url for url in urls if not Path(url).is_file()]
    if missing:
        raise MissingFileError(
            f"{len(missing)} of {len(urls)} shards of {pattern!r} not found, e.g. {missing[0]}; "
            f"write them with: xraygpt shards --storage <dataset folder> "
            f"--split train --out <shard folder>"
        )
    return urls


def consumer_shards(
    n_shards: int, epoch: int, consumer: int, n_consumers: int, seed: int
) -> tuple[list[int], bool]:
    """Which shards one consumer reads in one epoch, and whether it must sub-sample them.

    The shard order is reshuffled every epoch (same on all consumers); consumer
    ``c`` takes every ``n_consumers``-th shard from position ``c``. With fewer
    shards than consumers each consumer reads all shards and keeps every
    ``n_consumers``-th sample instead (returned flag ``True``), so no consumer
    ever runs dry.
    """
    order = np.random.default_rng([seed, _SHUFFLE_TAG, epoch]).permutation(n_shards)
    if n_shards >= n_consumers:
        return [int(i) for i in order[consumer::n_consumers]], False
    return [int(i) for i in order], True


class ShardCaptionDataset(CaptionSource, IterableDataset):
    """Samples of the tar shards at ``urls``, processed like :class:`CaptionDataset`'s.

    Iterating it directly gives one pass over all shards, split among the
    DataLoader workers if any. Training uses :meth:`raw_stream` and
    :meth:`decode` through :func:`xraygpt.data.loaders.build_train_loader`.
    """

    def __init__(
        self,
        urls: list[str],
        vis_processor: Callable,
        text_processor: Callable,
        *,
        image_ext: str = ".jpg",
        on_bad_image: str = "skip",
        shuffle_buffer: int = 1000,
        name: str = "dataset",
        split: str = "train",
        min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    ) -> None:
        super().__init__(
            vis_processor,
            text_processor,
            on_bad_image=on_bad_image,
            name=name,
            split=split,
            min_image_size=min_image_size,
        )
        if not urls:
            raise ValueError(f"dataset {name}/{split} has no shards")
        self.urls = list(urls)
        self.image_key = image_ext.lstrip(".").lower()
        self.shuffle_buffer = shuffle_buffer

    def _shard_samples(self, shard_ids: list[int]) -> Iterator[dict[str, Any]]:
        return tarfile_samples([{"url": self.urls[i]} for i in shard_ids])

    def raw_stream(
        self, epoch: int, consumer: int = 0, n_consumers: int = 1, seed: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Undecoded samples (``__key__``, ``json``, image bytes) of one consumer's epoch.

        Shuffled through a buffer of ``shuffle_buffer`` samples with a
        generator seeded by (seed, epoch, consumer): the stream is a pure
        function of those, so skipping ahead needs no image decoding.
        """
        shard_ids, subsample = consumer_shards(len(self.urls), epoch, consumer, n_consumers, seed)
        samples = self._shard_samples(shard_ids)
        if subsample:
            samples = (s for k, s in enumerate(samples) if k % n_consumers == consumer)
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        rng = np.random.default_rng([seed, _SHUFFLE_TAG, epoch, consumer, 1])
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            j = int(rng.integers(len(buffer)))
            buffer[j], sample = sample, buffer[j]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def decode(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        """A processed sample, or ``None`` for an unreadable image (when skipping)."""
        where = f"{raw.get('__url__')}: sample {raw.get('__key__')}"
        if "json" not in raw:
            raise AnnotationError(f"{where}: no .json annotation in the shard")
        ann = parse_entry(json.loads(raw["json"]), where)
        try:
            if self.image_key not in raw:
                raise MissingFileError(f"no .{self.image_key} file for this sample")
            image = read_image(raw[self.image_key], self.vis_processor, self.min_image_size)
        except IMAGE_ERRORS as err:
            self.bad_image(f"{ann.image_id} ({where})", err)
            self.skipped_ids.append(ann.image_id)
            return None
        return make_sample(ann, image, self.text_processor)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        consumer, n_consumers = (info.id, info.num_workers) if info else (0, 1)
        # One unshuffled pass, for evaluation and checks; bad images are left out.
        for raw in self.raw_stream(0, consumer, n_consumers, seed=0):
            sample = self.decode(raw)
            if sample is not None:
                yield sample


def seeded_decode(dataset: ShardCaptionDataset, raw: dict[str, Any], aug_seed: int):
    """``dataset.decode(raw)`` with the augmentation RNG seeded, leaving the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(aug_seed)
        return dataset.decode(raw)


def endless_raw(
    dataset: ShardCaptionDataset, consumer: int, n_consumers: int, seed: int
) -> Iterator[dict[str, Any]]:
    """One consumer's raw samples, epoch after epoch, forever."""
    for epoch in count():
        empty = True
        for raw in dataset.raw_stream(epoch, consumer, n_consumers, seed):
            empty = False
            yield raw
        if empty:
            raise RuntimeError(
                f"consumer {consumer} of {n_consumers} got no samples from the "
                f"{len(dataset.urls)} shards of dataset {dataset.name}; are the shards empty?"
            )
