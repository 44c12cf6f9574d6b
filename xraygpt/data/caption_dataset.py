"""Image-caption datasets read from a folder of images, and the collater.

A sample is a dict (CONTRIBUTING.md): ``image`` (float tensor [3, H, W]),
``caption`` (processed str), ``image_id`` (str), ``labels`` when the
annotation has them, and ``skipped``: how many unreadable images were passed
over to produce this sample (0 almost always).

Bad images. A missing or corrupt image does not stop training: with
``on_bad_image="skip"`` the dataset logs a warning naming the file and returns
the next readable sample instead (index + 1, + 2, ...: deterministic). An
image with a side below ``min_image_size`` pixels (default 32: a thumbnail, a
1x1 placeholder) counts as unreadable. The
count reaches the runner through the batches, because with DataLoader workers
the dataset object that counted lives in another process: :func:`collate` sums
the samples' ``skipped`` into ``batch["skipped"]`` and
:class:`xraygpt.data.loaders.TrainLoader` accumulates it in the main
process (``pop_bad_image_count()`` at the end of each epoch). With
``on_bad_image="error"`` the first bad image raises :class:`BadImageError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from xraygpt.common.errors import XrayGPTError
from xraygpt.data.annotations import Annotation
from xraygpt.processors.image_io import ImageSource, load_image

log = logging.getLogger(__name__)

ON_BAD_IMAGE = ("skip", "error")

# Smallest side, in pixels, of an image worth training on (datasets.<name>.min_image_size).
DEFAULT_MIN_IMAGE_SIZE = 32

# Give up after this many unreadable images in a row: by then the folder is
# wrong, not a file.
MAX_BAD_IN_A_ROW = 50

# What PIL raises for files that exist but cannot be decoded (truncated data,
# wrong format, broken PNG chunks, decompression bombs).
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


class BadImageError(XrayGPTError, RuntimeError):
    """An image that cannot be read while ``on_bad_image`` is ``error``."""


_warned: set[str] = set()  # per process: one warning per bad file, not one per epoch


def warn_bad_image(what: str, err: BaseException) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("skipping unreadable image %s (%s: %s)", what, type(err).__name__, err)


def read_image(source: ImageSource, vis_processor: Callable, min_size: int = 0) -> torch.Tensor:
    """Decode ``source`` (draft-decoded when the processor allows) and process it;
    an image with a side below ``min_size`` pixels raises ``ImageTooSmallError``."""
    image = load_image(
        source, draft_size=getattr(vis_processor, "decode_size", None), min_size=min_size
    )
    return vis_processor(image)


def make_sample(
    ann: Annotation, image: torch.Tensor, text_processor: Callable, skipped: int = 0
) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "image": image,
        "caption": text_processor(ann.caption),
        "image_id": ann.image_id,
    }
    if ann.labels is not None:
        sample["labels"] = dict(ann.labels)
    sample["skipped"] = skipped
    return sample


class CaptionSource:
    """What the folder and the shard datasets share: the processors, the bad-image
    policy and the names."""

    def __init__(
        self,
        vis_processor: Callable,
        text_processor: Callable,
        *,
        on_bad_image: str,
        name: str,
        split: str,
        min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    ) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(
                f"on_bad_image must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad_image!r}"
            )
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        if min_image_size < 0:
            raise ValueError(f"min_image_size must be >= 0, got {min_image_size}")
        self.on_bad_image = on_bad_image
        self.min_image_size = min_image_size
        # Shard datasets leave bad images out of the stream; evaluation reports their ids.
        self.skipped_ids: list[str] = []
        self.name = name
        self.split = split
        self.sample_ratio = 1.0  # set by the builder from the config

    def bad_image(self, what: str, err: BaseException) -> None:
        """Raise :class:`BadImageError` for the unreadable image ``what`` under
        ``on_bad_image: error``; else warn (once per image) and let the caller skip it."""
        if self.on_bad_image == "error":
            raise BadImageError(
                f"cannot read image {what} ({type(err).__name__}: {err}); "
                f"set on_bad_image: skip in datasets.{self.name} to skip such files"
            ) from err
        warn_bad_image(what, err)


class CaptionDataset(CaptionSource, Dataset):
    """Map-style dataset over ``<image_dir>/<image_id><image_ext>`` and their captions."""

    def __init__(
        self,
        annotations: Sequence[Annotation],
        image_dir: str | Path,
        vis_processor: Callable,
        text_processor: Callable,
        *,
        image_ext: str = ".jpg",
        on_bad_image: str = "skip",
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
        if not annotations:
            raise ValueError(f"dataset {name}/{split} has no annotations")
        self.annotations = list(annotations)
        self.image_dir = Path(image_dir)
        self.image_ext = image_ext if image_ext.startswith(".") else f".{image_ext}"

    def __len__(self) -> int:
        return len(self.annotations)

    def image_path(self, index: int) -> Path:
        return self.image_dir / f"{self.annotations[index].image_id}{self.image_ext}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.annotations)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        skipped = 0
        for attempt in range(min(n, MAX_BAD_IN_A_ROW)):
            current = (index + attempt) % n
            path = self.image_path(current)
            try:
                image = read_image(path, self.vis_processor, self.min_image_size)
            except IMAGE_ERRORS as err:
                self.bad_image(str(path), err)
                skipped += 1
                continue
            return make_sample(self.annotations[current], image, self.text_processor, skipped)
        raise BadImageError(
            f"{skipped} images in a row are unreadable in {self.image_dir} "
            f"(from {self.image_path(index).name}); check the folder and image_ext "
            f"{self.image_ext!r} of dataset {self.name}"
        )


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``image`` to [B, 3, H, W]; other keys become lists; ``skipped`` is summed.

    A key that only some samples have (``labels`` when datasets are mixed)
    gets ``None`` for the others.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {"image": torch.stack([sample["image"] for sample in samples])}
    keys: list[str] = []
    for sample in samples:
        keys.extend(key for key in sample if key not in keys)
    for key in keys:
        if key in ("image", "skipped"):
            continue
        batch[key] = [sample.get(key) for sample in samples]
    batch["skipped"] = sum(int(sample.get("skipped", 0)) for sample in samples)
    return batch
